"""Report the swept metric to an Optuna trial every epoch and stop the run when the pruner says so."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from harvest.runs.directory import scalar_metrics

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Hyperband (or any Optuna pruner) early termination for ``harvest sweep``.

    Added by the sweep runner, not by configs: it needs the live ``optuna.Trial``. After every
    validation epoch it reports ``monitor`` at step = epochs completed (W&B's Hyperband counts
    iterations the same way) and asks the pruner; each answer is a log line, and a prune stops the
    run by raising ``optuna.TrialPruned`` (the run's summary says so). ``reported`` and ``pruned``
    hold what was reported and decided, for the sweep's ``results.json``.

    Args:
        trial: The Optuna trial of this run.
        monitor: The swept metric.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self.reported: dict[int, float] = {}
        self.pruned: dict[str, Any] | None = None
        self._warned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = scalar_metrics(trainer.callback_metrics).get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning(
                    "sweep trial %d: %r is not logged at validation, so Hyperband cannot judge this trial; "
                    "it runs to the end.",
                    self.trial.number,
                    self.monitor,
                )
                self._warned = True
            return
        epoch = trainer.current_epoch + 1
        self.reported[epoch] = value
        self.trial.report(value, step=epoch)
        prune = self.trial.should_prune()
        log.info(
            "sweep trial %d epoch %d: %s=%.4g -> %s",
            self.trial.number,
            epoch,
            self.monitor,
            value,
            "pruned (Hyperband: not among the best 1/eta at this rung)" if prune else "continue",
        )
        if prune:
            import optuna

            self.pruned = {"epoch": epoch, "value": value}
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4g}")
