r"""``harvest sweep``: hyperparameter sweeps of ``harvest fit`` runs, with Optuna here or on W&B.

    harvest sweep --config configs/groceries_ssl.yaml --config configs/demo/groceries_cpu.yaml \\
        --sweep configs/sweeps/groceries_ssl.yaml --trials 8 [--storage sqlite:///optuna.db]
    harvest sweep --backend wandb --config configs/groceries_ssl.yaml --sweep configs/sweeps/groceries_ssl.yaml

Every trial is a full ``harvest fit`` (run directory, summary, trackers) named
``<study>_trial<NNN>``; the sweep writes ``<runs>/sweeps/<study>/results.json`` and
``best.yaml``, a config to compose after the base ones to rerun the best trial. Arguments after
``--`` go to every trial (e.g. ``-- --trainer.max_epochs=2``).
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from rich.table import Table

from callbacks.optuna_pruning import OptunaPruning
from callbacks.training_summary import scalar_metrics, write_json_atomic
from harvest.cli import split_passthrough
from harvest.console import console as output_console
from harvest.imports import require
from harvest.sweep_space import SweepConfigError, SweepSpec, load_sweep, nested_overrides
from harvest.tracking import wandb_server_unreachable

log = logging.getLogger(__name__)


def _cli_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def fit_once(configs: list[str], values: dict[str, Any], extra: list[str], run_name: str, callbacks: list) -> dict:
    """Run one ``harvest fit`` with ``values`` as ``--key=value`` overrides; return its final metrics."""
    from harvest.cli import HarvestCLI

    args = [a for c in configs for a in ("--config", c)]
    args += [f"--{key}={_cli_value(value)}" for key, value in values.items()] + list(extra) + [f"--run_name={run_name}"]
    cli = HarvestCLI(args=args, run=False)
    cli.trainer.callbacks.extend(callbacks)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return scalar_metrics(cli.trainer.callback_metrics)


def run_optuna(
    spec: SweepSpec, configs: list[str], extra: list[str], trials: int, study_name: str, storage: str | None, seed: int
) -> Any:
    """Run the sweep locally with Optuna and return the study."""
    require("optuna", "harvest sweep")
    import optuna

    samplers = {
        "bayes": lambda: optuna.samplers.TPESampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "grid": lambda: optuna.samplers.GridSampler({p.key: p.grid_values() for p in spec.parameters}, seed=seed),
    }
    early = spec.early_terminate
    pruner = (
        optuna.pruners.HyperbandPruner(
            min_resource=int(early.get("min_iter", 1)), reduction_factor=int(early.get("eta", 3))
        )
        if early
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=study_name,
        storage=storage,
        sampler=samplers[spec.method](),
        pruner=pruner,
        direction=spec.direction,
        load_if_exists=True,
    )

    def objective(trial: Any) -> float:
        values = {p.key: p.suggest(trial) for p in spec.parameters}
        run_name = f"{study_name}_trial{trial.number:03d}"
        trial.set_user_attr("run_name", run_name)
        pruning = [OptunaPruning(trial, early.get("monitor", spec.metric))] if early else []
        metrics = fit_once(configs, values, extra, run_name, pruning)
        if metrics.get(spec.metric) is None:
            raise SweepConfigError(
                f"{spec.path}: metric.name {spec.metric!r} was not logged by run {run_name}; "
                f"logged metrics are: {', '.join(sorted(metrics)) or 'none'}"
            )
        return float(metrics[spec.metric])

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=trials)
    return study


def report(study: Any, spec: SweepSpec, out_dir: Path) -> dict[str, Any]:
    """Write ``results.json`` and ``best.yaml`` into ``out_dir`` and print the trials table."""
    trials = [
        {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "run_name": t.user_attrs.get("run_name"),
            "params": {k: t.params[k] for k in t.params},
        }
        for t in study.trials
    ]
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    best = study.best_trial if completed else None
    results = {
        "study": study.study_name,
        "sweep": str(spec.path),
        "metric": spec.metric,
        "goal": spec.goal,
        "trials": trials,
        "best": {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "run_name": best.user_attrs.get("run_name"),
        }
        if best
        else None,
    }
    write_json_atomic(out_dir / "results.json", results)
    if best is not None:
        (out_dir / "best.yaml").write_text(
            yaml.safe_dump(nested_overrides(_decoded(spec, best.params)), sort_keys=False)
        )

    table = Table(title=f"Sweep {study.study_name}: {spec.metric} ({spec.goal})")
    for column in ("trial", "state", spec.metric, *(p.key for p in spec.parameters)):
        table.add_column(column)
    for t in trials:
        mark = " *" if best is not None and t["number"] == best.number else ""
        value = "-" if t["value"] is None else f"{t['value']:.4f}{mark}"
        cells = (_cell(t["params"].get(p.key, "")) for p in spec.parameters)
        table.add_row(str(t["number"]), t["state"], value, *cells)
    output_console().print(table)
    log.info(
        "sweep results: %s (best trial marked *; rerun it with --config %s)",
        out_dir / "results.json",
        out_dir / "best.yaml",
    )
    return results


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _decoded(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna stores non-scalar categorical choices as JSON strings; give back the values."""
    decoded = dict(params)
    for p in spec.parameters:
        values = p.spec.get("values")
        if p.key in decoded and values and not all(isinstance(v, (str, int, float, bool, type(None))) for v in values):
            decoded[p.key] = json.loads(decoded[p.key])
        elif "value" in p.spec:
            decoded[p.key] = p.spec["value"]
    return decoded


def export_wandb(spec: SweepSpec, configs: list[str], out_dir: Path, project: str | None) -> Path:
    """Write the W&B sweep config for this sweep; create the sweep on the server when W&B is online."""
    config = spec.wandb_config(["harvest", "fit", *(a for c in configs for a in ("--config", c))])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "wandb_sweep.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    if wandb_server_unreachable():
        log.warning(
            "W&B sweeps need the W&B server and W&B is offline here: wrote %s; once online run "
            "`wandb sweep %s` and then `wandb agent <sweep id>` (or run `harvest sweep` without --backend wandb "
            "to sweep locally with Optuna).",
            path,
            path,
        )
        return path
    import wandb

    sweep_id = wandb.sweep(sweep=config, project=project)
    log.info("created W&B sweep %s; start agents with: wandb agent %s", sweep_id, sweep_id)
    return path


def main(argv: list[str] | None = None) -> None:
    """``harvest sweep`` entry point."""
    argv, extra = split_passthrough(argv)
    parser = argparse.ArgumentParser(prog="harvest sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="harvest fit config (repeatable, last wins)")
    parser.add_argument("--sweep", required=True, help="sweep file in W&B format with harvest fit keys")
    parser.add_argument("--backend", choices=("optuna", "wandb"), default="optuna")
    parser.add_argument("--trials", type=int, default=None, help="number of trials (default: run_cap, else 10)")
    parser.add_argument("--study-name", default=None, help="default: <sweep file stem>_<YYYYmmdd_HHMMSS>")
    parser.add_argument(
        "--storage", default=None, help="Optuna storage URL to resume studies, e.g. sqlite:///optuna.db"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--output", default="runs/sweeps", help="where the sweep's results folder is written")
    parser.add_argument("--project", default=None, help="W&B project (--backend wandb)")
    args = parser.parse_args(argv)
    try:
        spec = load_sweep(args.sweep)
    except SweepConfigError as error:
        parser.exit(2, f"harvest sweep: {error}\n")
    study_name = args.study_name or f"{spec.path.stem}_{datetime.now():%Y%m%d_%H%M%S}"
    out_dir = Path(args.output) / study_name
    if args.backend == "wandb":
        export_wandb(spec, args.config, out_dir, args.project)
        return
    study = run_optuna(spec, args.config, extra, args.trials or spec.run_cap or 10, study_name, args.storage, args.seed)
    report(study, spec, out_dir)
