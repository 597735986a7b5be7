"""Check a sweep file against W&B's own sweep-configuration JSON schema, before anything runs.

The schema is W&B's (``harvest/vendor/wandb_sweeps/schema.json``, unchanged, see the README
there), loaded with ``jsonschema`` exactly as W&B's sweeps engine loads it: Draft 7, with its
``float`` and ``integer`` formats. A file that passes here is one ``wandb sweep`` accepts.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from harvest.core.imports import require

SCHEMA_PATH = Path(__file__).parent / "vendor" / "wandb_sweeps" / "schema.json"

#: Keys users put in a sweep file that belong elsewhere, and where.
_MISPLACED = {
    "count": "count is `wandb agent --count N`, not a sweep key: set run_cap: N (harvest sweep --trials N)",
    "monitor": "the swept metric (metric.name) is what Hyperband watches, reported every epoch",
}

#: Keys whose values the schema wants as numbers (YAML reads ``1e-5``, without a dot, as text).
_NUMERIC_KEYS = ("min", "max", "mu", "sigma", "q", "a", "b", "min_iter", "max_iter", "s", "eta", "run_cap", "target")


class SweepSchemaError(ValueError):
    """A sweep file W&B's sweep schema rejects; the message names the file, the key and the fix."""


@cache
def _validator() -> Any:
    require("jsonschema", "harvest sweep")
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    formats = jsonschema.FormatChecker()
    # the two formats W&B's sweeps engine registers (sweeps/config/schema.py)
    formats.checks("float")(lambda value: isinstance(value, float))
    formats.checks("integer")(lambda value: isinstance(value, int))
    return jsonschema.Draft7Validator(schema, format_checker=formats)


def _where(path: Any) -> str:
    return ".".join(str(part) for part in path) or "the top level"


def _numbers_read_as_text(raw: Any, path: tuple = ()) -> tuple[str, str] | None:
    """The first ``(key, text)`` where YAML read a number as a string (``min: 1e-5``)."""
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key in _NUMERIC_KEYS and isinstance(value, str):
                try:
                    float(value)
                except ValueError:
                    continue
                return _where((*path, key)), value
            found = _numbers_read_as_text(value, (*path, key))
            if found:
                return found
    return None


def _yaml_float(value: float) -> str:
    """``value`` written so that YAML 1.1 reads a float (``1.0e-05``, not ``1e-05``)."""
    mantissa, exponent = f"{value:e}".split("e")
    mantissa = mantissa.rstrip("0")
    return f"{mantissa}0e{exponent}" if mantissa.endswith(".") else f"{mantissa}e{exponent}"


def _fix(error: Any) -> str:
    """What to do about one schema error, from the schema itself."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    where = list(error.absolute_path)
    if error.validator == "additionalProperties":
        for key, fix in _MISPLACED.items():
            if f"'{key}' was unexpected" in error.message:
                return fix
        return "allowed keys here: " + ", ".join(schema.get("properties", {}))
    if error.validator == "enum":
        return "use one of: " + ", ".join(map(str, error.validator_value))
    if error.validator == "anyOf" and where[:1] == ["early_terminate"]:
        return "give hyperband min_iter, or max_iter and s (eta is optional, default 3)"
    if error.validator == "anyOf" and where[:1] == ["parameters"]:
        return (
            "a parameter is `values: [...]`, `value: x`, or `min:`/`max:` numbers with an optional "
            "`distribution` (uniform, int_uniform, log_uniform_values, q_uniform, ...)"
        )
    if error.validator == "required":
        return f"add {error.validator_value}"
    return schema.get("description", "see https://docs.wandb.ai/guides/sweeps/sweep-config-keys")


def validate_sweep_config(raw: Any, source: str | Path) -> None:
    """Raise :class:`SweepSchemaError` when ``raw`` (a parsed sweep file) breaks W&B's sweep schema.

    Args:
        raw: The sweep configuration, as YAML or JSON read it.
        source: The file it came from, named in the message.

    Raises:
        SweepSchemaError: One line naming ``source``, the key, what is wrong and the fix.
    """
    text = _numbers_read_as_text(raw)
    if text:
        key, value = text
        raise SweepSchemaError(
            f"{source}: {key} is the text {value!r}, not a number (YAML 1.1 reads an exponent without a dot "
            f"and a sign as text): write {_yaml_float(float(value))}"
        )
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator().iter_errors(raw))
    if error is None:
        return
    if error.validator == "anyOf" and error.context:  # a bad parameter: say which of its keys is off
        deepest = jsonschema.exceptions.best_match(error.context)
        detail = f"{error.message.splitlines()[0][:120]}; closest form: {deepest.message}"
    else:
        detail = error.message.splitlines()[0]
    raise SweepSchemaError(f"{source}: {_where(error.absolute_path)}: {detail} (W&B sweep schema); fix: {_fix(error)}")
