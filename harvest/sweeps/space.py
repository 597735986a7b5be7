"""Sweep files in the W&B sweep format, sampled by Optuna or exported to a W&B sweep.

A sweep file is a W&B sweep configuration (checked against W&B's own schema, see
:mod:`harvest.sweeps.schema`) whose parameter names are ``harvest fit`` keys::

    method: bayes                    # bayes | random | grid
    metric: {name: val/accuracy, goal: maximize}
    parameters:
      data.init_args.labeled_ratio: {values: [0.1, 0.2, 0.3]}
      model.init_args.optimizer.init_args.lr: {min: 1.0e-5, max: 1.0e-3, distribution: log_uniform_values}
    early_terminate: {type: hyperband, min_iter: 1, eta: 2}
    run_cap: 10

A file written for another program (``labeled_ratio`` instead of ``data.init_args.labeled_ratio``)
runs once each name is mapped to a ``harvest fit`` key (or the metric to a logged metric), in the
file (Harvest's one addition to the format, removed before validation and export)::

    harvest_keys:
      labeled_ratio: data.init_args.labeled_ratio
      test_accuracy: val/accuracy

or on the command line: ``harvest sweep ... --key labeled_ratio=data.init_args.labeled_ratio``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harvest.sweeps.schema import SweepSchemaError, validate_sweep_config

#: Harvest's only top-level addition to W&B's sweep format: sweep-file name -> Harvest key.
KEYS_SECTION = "harvest_keys"
_PRIMITIVES = (str, int, float, bool, type(None))
#: W&B distributions Optuna samples (the rest run on the W&B server: ``--backend wandb``).
OPTUNA_DISTRIBUTIONS = (
    "constant",
    "categorical",
    "int_uniform",
    "uniform",
    "q_uniform",
    "log_uniform_values",
    "q_log_uniform_values",
    "log_uniform",
)


class SweepConfigError(ValueError):
    """A sweep that cannot be run; the message names the file, the value and the fix."""


@dataclass
class Parameter:
    """One swept ``harvest fit`` key, its name in the sweep file and its W&B distribution.

    Args:
        name: The name in the sweep file (the Optuna parameter name).
        key: The ``harvest fit`` key it sets (``name`` unless mapped).
        spec: The W&B parameter block (``values``, ``min``/``max``, ``distribution``...).
        as_list: The key takes a list and the file gives single items: each value is sent as ``[value]``.
    """

    name: str
    key: str
    spec: dict[str, Any]
    as_list: bool = False

    @property
    def distribution(self) -> str:
        """The W&B distribution, inferred as W&B infers it when the file leaves it out."""
        spec = self.spec
        if "distribution" in spec:
            return spec["distribution"]
        if "value" in spec:
            return "constant"
        if "values" in spec:
            return "categorical"
        both_int = all(isinstance(spec.get(k), int) and not isinstance(spec.get(k), bool) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"

    @property
    def choices(self) -> list[Any] | None:
        """The finite values this parameter takes, or ``None`` for a continuous range."""
        spec, distribution = self.spec, self.distribution
        if distribution == "constant":
            return [spec["value"]]
        if distribution == "categorical":
            return list(spec["values"])
        if distribution == "int_uniform":
            return list(range(int(spec["min"]), int(spec["max"]) + 1))
        return None

    def value_for_key(self, value: Any) -> Any:
        """The value as the ``harvest fit`` key takes it."""
        return [value] if self.as_list and not isinstance(value, list) else value

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value from an Optuna trial (in the sweep file's terms)."""
        spec, name, distribution = self.spec, self.name, self.distribution
        if distribution == "constant":
            return spec["value"]
        if distribution == "categorical":
            values = spec["values"]
            if all(isinstance(v, _PRIMITIVES) for v in values):
                return trial.suggest_categorical(name, values)
            return json.loads(trial.suggest_categorical(name, [json.dumps(v) for v in values]))
        low, high = spec["min"], spec["max"]
        if distribution == "int_uniform":
            return trial.suggest_int(name, int(low), int(high))
        if distribution == "log_uniform":  # W&B's log_uniform takes natural-log bounds
            return trial.suggest_float(name, math.exp(low), math.exp(high), log=True)
        if distribution == "log_uniform_values":
            return trial.suggest_float(name, float(low), float(high), log=True)
        if distribution == "q_log_uniform_values":
            q = float(spec.get("q", 1.0))
            return round(trial.suggest_float(name, float(low), float(high), log=True) / q) * q
        if distribution == "q_uniform":
            return trial.suggest_float(name, float(low), float(high), step=float(spec.get("q", 1.0)))
        return trial.suggest_float(name, float(low), float(high))

    def decode(self, stored: Any) -> Any:
        """Optuna's stored value (non-scalar choices are stored as JSON text) in the sweep file's terms."""
        values = self.spec.get("values")
        if values and not all(isinstance(v, _PRIMITIVES) for v in values) and isinstance(stored, str):
            return json.loads(stored)
        return stored


@dataclass
class SweepSpec:
    """A checked sweep file.

    Args:
        path: The sweep file.
        method: ``bayes``, ``random`` or ``grid``.
        metric: The swept metric, as Harvest logs it (after ``harvest_keys``).
        goal: ``maximize`` or ``minimize``.
        parameters: The swept parameters.
        early_terminate: W&B's hyperband block (empty without early termination).
        run_cap: W&B's cap on the number of runs.
        raw: The file as W&B sees it (without ``harvest_keys``).
    """

    path: Path
    method: str
    metric: str
    goal: str
    parameters: list[Parameter]
    early_terminate: dict[str, Any] = field(default_factory=dict)
    run_cap: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> str:
        """Optuna's name for the goal."""
        return "maximize" if self.goal == "maximize" else "minimize"

    def values_by_key(self, values: dict[str, Any]) -> dict[str, Any]:
        """Sampled values by sweep-file name -> ``{harvest fit key: value as the key takes it}``."""
        return {p.key: p.value_for_key(values[p.name]) for p in self.parameters if p.name in values}

    def wandb_config(self, command: list[str]) -> dict[str, Any]:
        """The W&B sweep configuration: Harvest keys as parameter names, ``command`` with the agent's ``${args}``."""
        config = {k: v for k, v in self.raw.items() if k not in ("parameters", "program", "command")}
        config["metric"] = {**self.raw.get("metric", {}), "name": self.metric}
        config["parameters"] = {p.key: _as_lists(p.spec) if p.as_list else p.spec for p in self.parameters}
        config["command"] = ["${env}", *command, "${args}"]
        return config


def _as_lists(spec: dict[str, Any]) -> dict[str, Any]:
    if "values" in spec:
        return {**spec, "values": [[v] for v in spec["values"]]}
    if "value" in spec:
        return {**spec, "value": [spec["value"]]}
    return spec


def _flatten(parameters: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """W&B's nested ``parameters:`` blocks as dotted names."""
    flat: dict[str, dict[str, Any]] = {}
    for name, spec in parameters.items():
        if isinstance(spec, dict) and set(spec) == {"parameters"}:
            flat.update(_flatten(spec["parameters"], f"{prefix}{name}."))
        else:
            flat[f"{prefix}{name}"] = spec
    return flat


def load_sweep(path: str | Path, keys: dict[str, str] | None = None) -> SweepSpec:
    """Read a sweep file and check it against W&B's sweep schema and what Optuna can run.

    Args:
        path: The sweep file (YAML or JSON).
        keys: Sweep-file name -> Harvest key mappings from the command line (they win over the file's).

    Raises:
        SweepConfigError: With the file, the offending value and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(
            f"{path}: sweep file not found; pass --sweep with a file like configs/sweeps/groceries_ssl.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SweepConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{path}: a sweep file is a mapping (method:, metric:, parameters:); got {raw!r}")
    mapping = raw.pop(KEYS_SECTION, None) or {}
    if not isinstance(mapping, dict):
        raise SweepConfigError(f"{path}: {KEYS_SECTION} maps sweep names to harvest keys (name: key); got {mapping!r}")
    mapping = {**mapping, **(keys or {})}
    try:
        validate_sweep_config(raw, path)
    except SweepSchemaError as error:
        raise SweepConfigError(str(error)) from None
    method = raw["method"]
    if method not in ("bayes", "random", "grid"):
        raise SweepConfigError(f"{path}: method {method!r} needs a custom W&B scheduler; use bayes, random or grid")
    metric = raw.get("metric") or {}
    if not metric.get("name"):
        raise SweepConfigError(f"{path}: metric.name is missing; set e.g. `metric: {{name: val/loss, goal: minimize}}`")
    flat = _flatten(raw.get("parameters") or {})
    unknown = sorted(set(mapping) - set(flat) - {metric["name"]})
    if unknown:
        raise SweepConfigError(
            f"{path}: {KEYS_SECTION} maps {', '.join(unknown)}, which is neither a parameter nor metric.name; "
            f"parameters: {', '.join(flat)}"
        )
    parameters = [Parameter(name, mapping.get(name, name), spec) for name, spec in flat.items()]
    for p in parameters:
        if p.distribution not in OPTUNA_DISTRIBUTIONS:
            raise SweepConfigError(
                f"{path}: parameters.{p.name}: distribution {p.distribution} runs on the W&B server only "
                f"(--backend wandb); for Optuna use one of {', '.join(OPTUNA_DISTRIBUTIONS)}"
            )
        if method == "grid" and p.choices is None:
            raise SweepConfigError(f"{path}: grid search needs `values` for {p.name!r}, got a range {p.spec!r}")
    return SweepSpec(
        path=path,
        method=method,
        metric=mapping.get(metric["name"], metric["name"]),
        goal=metric.get("goal", "minimize"),
        parameters=parameters,
        early_terminate=dict(raw.get("early_terminate") or {}),
        run_cap=raw.get("run_cap"),
        raw=raw,
    )


def nested_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """``{"model.init_args.lr": 0.1}`` -> ``{"model": {"init_args": {"lr": 0.1}}}``, a config ``--config`` accepts."""
    nested: dict[str, Any] = {}
    for dotted, value in values.items():
        node = nested
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested
