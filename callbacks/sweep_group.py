"""Group the runs of one sweep in the trackers: under one MLflow parent run, in one W&B group."""

from __future__ import annotations

import logging
from typing import ClassVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

from callbacks.mlflow_tracking import server_problem, tracking_uri
from harvest.tracking.context import loggers_of

log = logging.getLogger(__name__)

SWEEP_TAG = "harvest.sweep"
TRIAL_TAG = "harvest.trial"
PARENT_TAG = "harvest.sweep_parent"
STATE_TAG = "harvest.trial_state"


class SweepGroup(Callback):
    """Put a sweep trial's tracker runs in their sweep's group, before any run is created.

    Added by ``harvest sweep`` to every trial, after the recipe's callbacks (their ``preflight``
    checks go first). In ``preflight`` (called before ``fit``, ahead of the loggers' first request)
    it makes each MLflow run a child of the sweep's parent run
    (``mlflow.parentRunId``; the parent is created once per study and experiment and found again
    by its ``harvest.sweep`` tag, so several workers share it) and puts each W&B run in the
    W&B group named after the study. A run Hyperband stops gets ``harvest.trial_state: pruned: ...``
    (an MLflow tag, a W&B summary value).

    Args:
        study: The Optuna study (sweep) name.
        trial: The trial number.
    """

    _parents: ClassVar[dict[tuple[str, str, str], str]] = {}

    def __init__(self, study: str, trial: int) -> None:
        self.study = study
        self.trial = trial

    def preflight(self, trainer: pl.Trainer) -> None:
        """Tag the MLflow runs and group the W&B runs this trial is about to create."""
        for logger in loggers_of(trainer, MLFlowLogger):
            parent = self._parent_run(logger)
            logger.tags = {
                **(logger.tags or {}),
                "mlflow.parentRunId": parent,
                SWEEP_TAG: self.study,
                TRIAL_TAG: str(self.trial),
            }
        for logger in loggers_of(trainer, WandbLogger):
            init = logger._wandb_init  # wandb.init's arguments, used when the run starts (a config gives None)
            init["group"] = init.get("group") or self.study
            init["job_type"] = init.get("job_type") or "sweep-trial"

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Mark a run Hyperband stopped as pruned; close its W&B run (MLflow's is closed as failed by Lightning)."""
        if type(exception).__name__ != "TrialPruned" or not trainer.is_global_zero:
            return
        for logger in loggers_of(trainer, MLFlowLogger):
            if logger.run_id is not None:
                logger.experiment.set_tag(logger.run_id, STATE_TAG, f"pruned: {exception}")
        for logger in loggers_of(trainer, WandbLogger):
            if logger._experiment is not None:
                logger.experiment.summary[STATE_TAG] = f"pruned: {exception}"
                logger.experiment.finish()  # Lightning ends a stopped fit without teardown: close the run here
                logger._experiment = None

    def _parent_run(self, logger: MLFlowLogger) -> str:
        from mlflow import MlflowClient

        uri, experiment = tracking_uri(logger), logger._experiment_name
        key = (uri, experiment, self.study)
        if key not in self._parents:
            problem = server_problem(uri, timeout=5.0)
            if problem:  # say so now: MLflow's own requests retry for minutes
                raise RuntimeError(
                    f"MLflow tracking server {uri} cannot be reached ({problem}): sweep {self.study} ran no "
                    "trial. Start it, point trainer.logger's tracking_uri at a reachable one, or leave MLflow out."
                )
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else client.create_experiment(experiment)
            runs = client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{SWEEP_TAG}` = '{self.study}' and tags.`{PARENT_TAG}` = 'true'",
                max_results=1,
            )
            if runs:
                run_id = runs[0].info.run_id
            else:
                run = client.create_run(
                    experiment_id, run_name=self.study, tags={SWEEP_TAG: self.study, PARENT_TAG: "true"}
                )
                run_id = run.info.run_id
                client.set_terminated(run_id)  # a folder for the trials; it does no work itself
                log.info("MLflow: sweep %s groups its trials under parent run %s.", self.study, run_id)
            self._parents[key] = run_id
        return self._parents[key]
