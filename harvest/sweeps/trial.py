"""One sweep trial: a real ``harvest fit`` run, built as ``harvest fit`` builds it, minus the registry.

Each trial goes through the same steps as ``harvest fit``: the configs, the sampled values and the
fixed overrides are parsed by ``HarvestCLI``, the callbacks' ``preflight`` checks run (an MLflow
server that is down fails the trial in seconds, not after MLflow's retries), then ``fit``. Registry
callbacks are taken out (a sweep registers its best trial once, with ``--register``), and the
values the trial really ran with are read back from its resolved config.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger

from callbacks.mlflow_tracking import tracking_uri
from callbacks.model_registry_upload import ModelRegistryUpload
from harvest.lightning_cli.harvest_cli import HarvestCLI
from harvest.runs.directory import scalar_metrics
from harvest.sweeps.keys import effective_values
from harvest.tracking.context import loggers_of

log = logging.getLogger(__name__)


@dataclass
class TrialRun:
    """What one trial ran with and produced.

    Args:
        run_dir: The trial's run directory.
        effective: ``{harvest fit key: value}`` of the swept and the fixed keys, read from the trial's config.
        metrics: Its final metrics (``None`` until ``fit`` returns).
        registry_uri: Where its registry callback would have registered (``None`` without one).
    """

    run_dir: Path
    effective: dict[str, Any]
    metrics: dict[str, float] | None = None
    registry_uri: str | None = None
    registry_names: list[str] = field(default_factory=list)


def cli_value(value: Any) -> str:
    """A value as a ``--key=value`` argument jsonargparse reads back unchanged."""
    return value if isinstance(value, str) else json.dumps(value)


def trial_args(configs: list[str], values: dict[str, Any], extra: list[str], run_name: str | None) -> list[str]:
    """The ``harvest fit`` arguments of a trial (without the subcommand)."""
    args = [a for c in configs for a in ("--config", c)]
    args += [f"--{key}={cli_value(value)}" for key, value in values.items()] + list(extra)
    return args + ([f"--run_name={run_name}"] if run_name else [])


def _drop_registry(cli: HarvestCLI) -> tuple[str | None, list[str]]:
    """Remove the registry callbacks from a trial; return where and under which names they would register."""
    trainer = cli.trainer
    registry = [c for c in trainer.callbacks if isinstance(c, ModelRegistryUpload)]
    for callback in registry:
        trainer.callbacks.remove(callback)
    mlflow = loggers_of(trainer, MLFlowLogger)
    uri = next((c.tracking_uri for c in registry if c.tracking_uri), None)
    uri = uri or (tracking_uri(mlflow[0]) if mlflow else None)
    return uri, [c.name for c in registry]


def run_trial(
    configs: list[str],
    values: dict[str, Any],
    extra: list[str],
    run_name: str,
    callbacks: list[Callback],
    keys: list[str],
    started: dict[str, TrialRun] | None = None,
) -> TrialRun:
    """Run one ``harvest fit`` with ``values`` as ``--key=value`` overrides.

    Args:
        configs: The ``harvest fit`` config files.
        values: ``{harvest fit key: value}`` sampled for this trial.
        extra: Fixed overrides for every trial.
        run_name: The trial's run name.
        callbacks: Sweep callbacks for this trial (grouping, pruning), after the recipe's: its
            ``preflight`` checks (a tracking server that is down) run before theirs.
        keys: The keys whose effective values are recorded.
        started: Filled with the :class:`TrialRun` under ``run_name`` before ``fit``, so that a
            trial stopped by the pruner still has its record.

    Returns:
        The trial's record, with its final metrics.
    """
    cli = HarvestCLI(args=trial_args(configs, values, extra, run_name), run=False)
    uri, names = _drop_registry(cli)
    run = TrialRun(Path(cli.trainer.default_root_dir), effective_values(cli.config, keys), None, uri, names)
    if started is not None:
        started[run_name] = run
    cli.trainer.callbacks.extend(callbacks)
    cli.preflight()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    run.metrics = scalar_metrics(cli.trainer.callback_metrics)
    return run
