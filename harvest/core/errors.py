"""Errors shown to users: one line each."""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import re
import signal
from collections.abc import Iterable

from lightning.pytorch.utilities.exceptions import SIGTERMException


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type when it has none."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]


class RunInterrupted(Exception):  # noqa: N818 - what happened to the run, not a programming error
    """A run stopped by a signal (SIGTERM, SIGINT, SIGUSR1) after saving a resumable checkpoint.

    Args:
        signum: The signal received.
        checkpoint: The checkpoint saved for the resume (``None`` when none could be saved).
        run_dir: The run directory.
    """

    def __init__(self, signum: int, checkpoint: str | None, run_dir: str) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        name = signal.Signals(self.signum).name
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(
            f"{name} received: {saved}; resume with `harvest fit <same arguments> --run_name "
            f"{os.path.basename(run_dir)} --ckpt_path last`"
        )

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by this signal (128 + signal number)."""
        return 128 + self.signum


#: Exceptions that stop a run from outside (a signal), not a failure: the run is ``interrupted`` and resumable.
INTERRUPTIONS: tuple[type[BaseException], ...] = (RunInterrupted, KeyboardInterrupt, SIGTERMException)


def config_error_line(message: str, options: Iterable[str] = ()) -> str:
    """The cause of a jsonargparse error as one line: the key, the value and the closest valid key.

    jsonargparse reports a bad model option as ``Parser key "model": Does not validate against any
    of the Union subtypes ... Option 'foo' is not accepted``; this says
    ``model.init_args.foo is not a parameter of SemiSupervisedClassifier; did you mean ...``.

    Args:
        message: jsonargparse's error message (several lines).
        options: Every valid option (``trainer.max_epochs``, ``model.init_args.alpha``...), for
            "did you mean".
    """
    options = list(options)
    keys = re.findall(r'Parser key "([^"]+)"', message)
    owner = re.search(r"Problem with given class_path '([\w.]+)'", message)
    key = keys[0] if keys else ""
    if owner and len(keys) > 1:
        key = f"{keys[0]}.init_args.{keys[-1]}"
    unknown = (
        re.search(r"Option '([^']+)' is not accepted", message)
        or re.search(r"[Uu]nrecognized arguments: (\S+)", message)
        or re.search(r'No action for key "([^"]+)"', message)
    )
    if owner and keys:
        options += [f"{keys[0]}.init_args.{name}" for name in _parameters(owner.group(1))]
    if unknown:
        name = unknown.group(1).lstrip("-")
        full = f"{key}.init_args.{name}" if owner and key and not name.startswith(key) else name
        where = f" of {owner.group(1).rsplit('.', 1)[-1]}" if owner else ""
        close = difflib.get_close_matches(full, options, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"{full} is not a parameter{where}{hint}"
    missing = re.search(r"File does not exist: '?([^'\n]+)'?", message)
    if missing:
        return f"{key or 'config'}: file {missing.group(1)} does not exist"
    got = re.search(r"Got value: (.+)", message) or re.search(r"Given value: (.+)", message)
    expected = re.findall(r"Expected a <class '(\w+)'>", message)
    if got and expected:
        kinds = " or ".join(dict.fromkeys(k.replace("NoneType", "null") for k in expected))
        return f"{key}: {got.group(1).strip()!r} is not a valid value (expected {kinds})"
    lines = [line.strip(" -") for line in message.splitlines() if line.strip(" -")]
    return f"{key}: {lines[-1]}" if key and lines else (lines[0] if lines else "invalid configuration")


def _parameters(class_path: str) -> list[str]:
    """The ``__init__`` parameter names of ``class_path`` (empty when it cannot be imported)."""
    try:
        module, name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
        return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
