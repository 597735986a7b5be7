"""Sweep definitions in the W&B sweep format, sampled by Optuna or exported to a W&B sweep.

A sweep file is a W&B sweep configuration whose parameter names are ``harvest fit`` keys::

    method: bayes                    # bayes | random | grid
    metric: {name: summary/best_test_accuracy, goal: maximize}
    parameters:
      data.init_args.labeled_ratio: {values: [0.1, 0.2, 0.3]}
      optimizer.init_args.lr: {min: 1.0e-5, max: 1.0e-3, distribution: log_uniform_values}
    early_terminate: {type: hyperband, min_iter: 2, monitor: val/accuracy}
    run_cap: 10

The same file runs locally with Optuna (``harvest sweep``) and on the W&B server
(``harvest sweep --backend wandb``), whose agents call ``harvest fit ... --key=value``.
``early_terminate.monitor`` (Harvest's addition, not sent to W&B) names the per-epoch metric
pruning looks at when the sweep metric is only known at the end of a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_METHODS = ("bayes", "random", "grid")
_PRIMITIVES = (str, int, float, bool, type(None))


class SweepConfigError(ValueError):
    """A sweep file that cannot be run; the message names the file, the value and the fix."""


@dataclass
class Parameter:
    """One swept CLI key and its W&B distribution."""

    key: str
    spec: dict[str, Any]

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter's value from an Optuna trial."""
        spec, key = self.spec, self.key
        if "value" in spec:
            return spec["value"]
        if "values" in spec:
            values = spec["values"]
            if all(isinstance(v, _PRIMITIVES) for v in values):
                return trial.suggest_categorical(key, values)
            return json.loads(trial.suggest_categorical(key, [json.dumps(v) for v in values]))
        low, high = spec["min"], spec["max"]
        distribution = spec.get("distribution") or (
            "int_uniform" if isinstance(low, int) and isinstance(high, int) else "uniform"
        )
        if distribution == "int_uniform":
            return trial.suggest_int(key, int(low), int(high))
        if distribution == "log_uniform_values":
            return trial.suggest_float(key, float(low), float(high), log=True)
        if distribution == "q_uniform":
            return trial.suggest_float(key, float(low), float(high), step=float(spec.get("q", 1.0)))
        return trial.suggest_float(key, float(low), float(high))

    def grid_values(self) -> list[Any]:
        """The values of a grid search over this parameter."""
        if "value" in self.spec:
            return [self.spec["value"]]
        return list(self.spec["values"])


@dataclass
class SweepSpec:
    """A parsed sweep file."""

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

    def wandb_config(self, command: list[str]) -> dict[str, Any]:
        """The W&B sweep configuration, with ``command`` running ``harvest fit`` with the agent's ``${args}``."""
        config = {k: v for k, v in self.raw.items() if k != "early_terminate"}
        if self.early_terminate:
            config["early_terminate"] = {k: v for k, v in self.early_terminate.items() if k != "monitor"}
        config["command"] = ["${env}", *command, "${args}"]
        return config


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file.

    Raises:
        SweepConfigError: With the file, the offending value and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepConfigError(
            f"{path}: sweep file not found; pass --sweep with a file like configs/sweeps/groceries_ssl.yaml"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    method = raw.get("method", "bayes")
    if method not in _METHODS:
        raise SweepConfigError(f"{path}: method {method!r} is not one of {', '.join(_METHODS)}")
    metric = raw.get("metric") or {}
    if not metric.get("name"):
        raise SweepConfigError(f"{path}: metric.name is missing; set e.g. `metric: {{name: val/loss, goal: minimize}}`")
    goal = metric.get("goal", "minimize")
    if goal not in ("maximize", "minimize"):
        raise SweepConfigError(f"{path}: metric.goal {goal!r} must be maximize or minimize")
    parameters = []
    for key, spec in (raw.get("parameters") or {}).items():
        if not isinstance(spec, dict) or not ({"value", "values"} & set(spec) or {"min", "max"} <= set(spec)):
            raise SweepConfigError(
                f"{path}: parameter {key!r} needs `values: [...]`, `value: x` or `min:`/`max:`; got {spec!r}"
            )
        if method == "grid" and not {"value", "values"} & set(spec):
            raise SweepConfigError(f"{path}: grid search needs `values` for {key!r}, got a range {spec!r}")
        parameters.append(Parameter(key, spec))
    if not parameters:
        raise SweepConfigError(f"{path}: no parameters to sweep; add a `parameters:` mapping of harvest fit keys")
    early = raw.get("early_terminate") or {}
    if early and early.get("type") != "hyperband":
        raise SweepConfigError(f"{path}: early_terminate.type {early.get('type')!r} is not supported; use hyperband")
    return SweepSpec(path, method, metric["name"], goal, parameters, early, raw.get("run_cap"), raw)


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
