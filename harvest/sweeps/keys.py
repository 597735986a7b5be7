"""What ``harvest fit`` accepts, checked before a sweep runs its first trial.

The ``harvest fit`` configuration a sweep composes (its ``--config`` files and the fixed overrides
after ``--``) is parsed once, without building anything, so that every swept key is checked
against the keys it really has (with the closest valid keys when it is not one), a fixed override
of a swept key is caught, and each trial's effective values can be read back from its own config.
"""

from __future__ import annotations

import argparse
import difflib
import re
from typing import Any

from jsonargparse import Namespace

from harvest.core.errors import first_line
from harvest.lightning_cli.harvest_cli import HarvestCLI
from harvest.sweeps.space import Parameter, SweepConfigError, SweepSpec

_FLAG = re.compile(r"^--([A-Za-z_][\w.]*[\w])\+?(?:=|$)")
_NOT_SWEEPABLE = {"config", "print_config", "run_name"}


class _ParseOnly(HarvestCLI):
    """``HarvestCLI`` that parses its arguments and stops: no run directory, no seed, no class built."""

    def _set_seed(self) -> None:
        pass

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:
        pass


def parse_fit_config(configs: list[str], extra: list[str]) -> Namespace:
    """The ``harvest fit`` configuration of ``--config`` files plus ``extra`` arguments, parsed only.

    Raises:
        SweepConfigError: ``harvest fit`` refuses them; the message is the parser's first line.
    """
    args = [a for c in configs for a in ("--config", c)] + list(extra)
    try:
        return _ParseOnly(args=args, run=False, parser_kwargs={"exit_on_error": False}).config
    except argparse.ArgumentError as error:
        raise SweepConfigError(
            f"harvest fit refuses the sweep's configs and overrides ({' '.join(args)}): {first_line(error)}"
        ) from None


def fit_keys(config: Namespace) -> list[str]:
    """Every leaf key of a parsed ``harvest fit`` configuration (``model.init_args.optimizer.init_args.lr``...)."""
    return [k for k in config.keys() if k.split(".")[0] not in _NOT_SWEEPABLE]


def _short(key: str) -> str:
    return key.replace(".init_args.", ".")


def resolve_keys(spec: SweepSpec, config: Namespace) -> None:
    """Check each swept key against ``config``; expand short forms (``data.labeled_ratio``) to full keys.

    A key whose current value is a list while the sweep gives single items (the original
    project's ``algorithm: label_spreading`` for ``model.init_args.algorithms``) is swept as ``[item]``.

    Raises:
        SweepConfigError: A key ``harvest fit`` does not accept, with the closest ones it does.
    """
    keys = fit_keys(config)
    by_short = {_short(k): k for k in keys}
    for p in spec.parameters:
        key = p.key if p.key in keys else by_short.get(_short(p.key))
        if key is None:
            close = difflib.get_close_matches(p.key, keys, n=3, cutoff=0.4) or difflib.get_close_matches(
                p.key.split(".")[-1], [k.split(".")[-1] for k in keys], n=3, cutoff=0.6
            )
            close = [k for k in keys if k in close or k.split(".")[-1] in close][:5]
            mapped = f" (mapped from {p.name!r})" if p.name != p.key else ""
            raise SweepConfigError(
                f"{spec.path}: parameter {p.key!r}{mapped} is not a key harvest fit accepts with these configs; "
                f"closest: {', '.join(close) or 'none'}; map it with `harvest_keys: {{{p.name}: <fit key>}}` "
                f"in the sweep file or --key {p.name}=<fit key>"
            )
        p.key = key
        p.as_list = isinstance(config.get(key), list) and not _all_lists(p)


def _all_lists(p: Parameter) -> bool:
    return p.choices is not None and all(isinstance(v, list) for v in p.choices)


def full_key(key: str, config: Namespace) -> str:
    """The config key an override sets, written in full (``data.batch_size`` -> ``data.init_args.batch_size``).

    An override inside a list item (``--trainer.callbacks.monitor``) sets the whole list (``trainer.callbacks``).
    """
    keys = fit_keys(config)
    by_short = {_short(k): k for k in keys}
    part = key
    while part:
        if part in keys or _short(part) in by_short:
            return part if part in keys else by_short[_short(part)]
        abbreviated = [k for k in keys if k.startswith(part)]  # argparse takes a unique prefix
        if len(abbreviated) == 1:
            return abbreviated[0]
        part = part.rpartition(".")[0]
    return key


def override_keys(extra: list[str]) -> list[str]:
    """The keys that the fixed overrides (``-- --trainer.max_epochs=1 --data.batch_size 8``) set."""
    return [m.group(1) for arg in extra if (m := _FLAG.match(arg)) and m.group(1) not in _NOT_SWEEPABLE]


def check_conflicts(spec: SweepSpec, extra: list[str], config: Namespace) -> None:
    """Refuse a fixed override of a swept key: the trial would not run with the values the sweep records.

    Raises:
        SweepConfigError: Naming the override, the swept key and the two ways out.
    """
    for fixed in override_keys(extra):
        full = full_key(fixed, config)
        for p in spec.parameters:
            if full == p.key or p.key.startswith(full + ".") or full.startswith(p.key + "."):
                raise SweepConfigError(
                    f"{spec.path}: --{fixed} after -- fixes {p.key}, which this sweep samples "
                    f"(parameter {p.name!r}): drop the override, or remove {p.name!r} from the sweep "
                    f"(or sweep it with `value: ...`)"
                )


def plain(value: Any) -> Any:
    """A parsed config value as plain YAML data (nested namespaces as dicts)."""
    if isinstance(value, Namespace):
        return {k: plain(v) for k, v in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def effective_values(config: Namespace, keys: list[str]) -> dict[str, Any]:
    """``{key: value}`` of ``keys`` in a parsed (or a trial's resolved) configuration."""
    return {key: plain(config.get(key)) for key in keys}
