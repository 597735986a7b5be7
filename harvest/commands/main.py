"""The ``harvest`` command: LightningCLI's subcommands plus Harvest's own tools, and how errors end a run.

``harvest fit|validate|test|predict --config …`` are Lightning's (:class:`HarvestCLI`);
``harvest registry|data|sweep|monitor|runs|ssl …`` are Harvest's tools (see ``harvest <tool> --help``).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import ArgsType

from harvest.core.errors import RunInterrupted, first_line
from harvest.lightning_cli.harvest_cli import HarvestCLI

#: Harvest's own subcommands: name -> "module:function" taking the remaining argv.
TOOLS: dict[str, str] = {
    "registry": "harvest.commands.registry:main",
    "data": "harvest.commands.data:main",
    "sweep": "harvest.commands.sweep:main",
    "monitor": "harvest.commands.monitor:main",
    "runs": "harvest.commands.runs:main",
    "ssl": "harvest.commands.ssl:main",
}

def split_passthrough(argv: list[str] | None) -> tuple[list[str], list[str]]:
    """Split a tool's arguments at ``--``: its own, then those passed on to every ``harvest`` run it starts."""
    argv = list(argv or [])
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


class _StderrHandler(logging.StreamHandler):
    """A stream handler writing to whatever ``sys.stderr`` is at the time of each record."""

    @property  # type: ignore[override]
    def stream(self):  # noqa: D102
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


class _DropAdvertisements(logging.Filter):
    """Lightning's "💡 Tip: try installing …" lines advertise other products; runs do not need them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def configure_logging() -> None:
    """Show Harvest's INFO lines (one-line notes such as the precision fallback) on stderr.

    Also drops two kinds of third-party noise that say nothing about the run: Lightning's product
    tips and the torch 2.14 ``LeafSpec`` deprecation warning raised inside Lightning.
    """
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropAdvertisements) for f in rank_zero.filters):
        rank_zero.addFilter(_DropAdvertisements())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    for name in ("harvest", "callbacks", "datamodules", "lightning_modules"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = _StderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def cli_main(args: ArgsType = None) -> Any:
    """Entry point of ``harvest`` and ``python -m harvest``; tests call it with a list of arguments."""
    configure_logging()
    argv = sys.argv[1:] if args is None else args
    if isinstance(argv, (list, tuple)) and argv and argv[0] in TOOLS:
        module_name, function = TOOLS[argv[0]].split(":")
        if args is None:  # the tool parses these itself; the harvest runs it starts get explicit arguments
            sys.argv = sys.argv[:1]
        return getattr(importlib.import_module(module_name), function)(list(argv[1:]))
    epilog = "Harvest's own tools: " + ", ".join(f"harvest {tool} --help" for tool in TOOLS)
    return HarvestCLI(args=args, parser_kwargs={"epilog": epilog})


#: What a user can cause and fix (a missing folder, a bad value, an unreachable service): shown as
#: the one-line message the component wrote, without a traceback, unless HARVEST_DEBUG is set.
USER_ERRORS: tuple[type[BaseException], ...] = (
    OSError, ValueError, RuntimeError, KeyError, ImportError, MisconfigurationException,
)


def main() -> None:
    """Console-script entry point (``harvest``, ``python -m harvest``).

    Like :func:`cli_main`, but a user error ends the process with its one-line message and exit
    status 1 instead of a traceback (``HARVEST_DEBUG=1`` shows the traceback).
    """
    try:
        cli_main()
    except RunInterrupted as interrupted:
        sys.stderr.write(f"harvest: {interrupted}\n")
        sys.exit(interrupted.exit_code)
    except USER_ERRORS as error:
        if os.environ.get("HARVEST_DEBUG"):
            raise
        message = first_line(error, limit=2000)
        sys.stderr.write(f"harvest: error: {message} [{type(error).__name__}; HARVEST_DEBUG=1 shows the traceback]\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
