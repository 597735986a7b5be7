"""A sweep's results: ``results.json`` (every trial as it ran), ``best.yaml`` (the best one, to rerun) and a table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from harvest.core.console import console as output_console
from harvest.runs.directory import write_json_atomic
from harvest.sweeps.space import SweepSpec, nested_overrides

log = logging.getLogger(__name__)


def trial_record(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """One trial as ``results.json`` holds it."""
    by_name = {p.name: p for p in spec.parameters}
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name,
        "value": trial.value,
        "run_name": attrs.get("run_name"),
        "run_dir": attrs.get("run_dir"),
        "params": {k: by_name[k].decode(v) if k in by_name else v for k, v in trial.params.items()},
        "effective": attrs.get("effective"),
        "reported": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
        "pruned": attrs.get("pruned"),
        "same_as": attrs.get("same_as"),
        "registry_uri": attrs.get("registry_uri"),
    }


def best_yaml(best: dict[str, Any], spec: SweepSpec, configs: list[str], study: str, path: Path) -> str:
    """The best trial's swept and fixed values, as a config composed after ``configs``."""
    command = " ".join(["harvest fit", *(f"--config {c}" for c in [*configs, str(path)])])
    header = (
        f"# Best trial {best['number']} of sweep {study} ({spec.path}): {spec.metric} = {best['value']}\n"
        f"# Its swept and fixed values, as the trial ran with them. Rerun it with:\n#   {command}\n"
    )
    return header + yaml.safe_dump(nested_overrides(best["effective"] or {}), sort_keys=False)


def write_results(study: Any, spec: SweepSpec, configs: list[str], out_dir: Path) -> dict[str, Any]:
    """Write ``results.json`` and ``best.yaml`` (once a trial completed) into ``out_dir``; return the results.

    Called after every trial, so a sweep that stops (an error, Ctrl-C) keeps what its trials found.
    """
    trials = [trial_record(t, spec) for t in study.trials if not t.user_attrs.get("surplus")]
    completed = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
    pick = max if spec.goal == "maximize" else min
    best = pick(completed, key=lambda t: t["value"]) if completed else None
    results = {
        "study": study.study_name,
        "sweep": str(spec.path),
        "configs": list(configs),
        "metric": spec.metric,
        "goal": spec.goal,
        "trials": trials,
        "best": best,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", results)
    if best is not None:
        path = out_dir / "best.yaml"
        path.write_text(best_yaml(best, spec, configs, study.study_name, path))
    return results


def report(study: Any, spec: SweepSpec, configs: list[str], out_dir: Path) -> dict[str, Any]:
    """Write the results (:func:`write_results`), print the trials table and return the results."""
    results = write_results(study, spec, configs, out_dir)
    trials, best = results["trials"], results["best"]
    table = Table(title=f"Sweep {study.study_name}: {spec.metric} ({spec.goal})")
    for column in ("trial", "state", spec.metric, *(p.name for p in spec.parameters)):
        table.add_column(column)
    for t in trials:
        mark = " *" if best is not None and t["number"] == best["number"] else ""
        value = "-" if t["value"] is None else f"{t['value']:.4f}{mark}"
        state = f"PRUNED@{t['pruned']['epoch']}" if t["pruned"] else t["state"]
        table.add_row(str(t["number"]), state, value, *(_cell(t["params"].get(p.name, "")) for p in spec.parameters))
    output_console().print(table)
    log.info(
        "sweep results: %s (best trial marked *; rerun it with --config %s after the same configs)",
        out_dir / "results.json",
        out_dir / "best.yaml",
    )
    return results


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def register_best(results: dict[str, Any], name: str, uri: str | None) -> Any:
    """Register the best trial's checkpoint as a new version of ``name``, once, after the sweep.

    Args:
        results: What :func:`report` returned.
        name: Registered model name.
        uri: Registry URI; default: where the trials' registry callback (or MLflow logger) points, else
            the registry's default.

    Returns:
        The registered version.
    """
    from harvest.registry.api import RegistryError, open_registry

    best = results.get("best")
    if best is None:
        raise RegistryError(f"--register {name}: no trial of sweep {results['study']} completed; nothing to register.")
    registry = open_registry(uri or best.get("registry_uri"))
    info = registry.register(best["run_dir"], name, metrics={results["metric"]: best["value"]})
    log.info(
        "Registered the best trial %d (%s = %.4g, %s) as %s in %s.",
        best["number"],
        results["metric"],
        best["value"],
        best["run_dir"],
        info.label,
        registry.uri,
    )
    return info
