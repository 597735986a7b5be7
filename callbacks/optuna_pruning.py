"""Report a per-epoch metric to an Optuna trial and stop the run when the pruner says so."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from harvest.run_directory import scalar_metrics

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """Hyperband (or any Optuna pruner) early termination for ``harvest sweep``.

    Added by the sweep runner, not by configs: it needs the live ``optuna.Trial``.

    Args:
        trial: The Optuna trial of this run.
        monitor: Metric reported after every validation epoch.
    """

    def __init__(self, trial: Any, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor
        self._warned = False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = scalar_metrics(trainer.callback_metrics).get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning(
                    "sweep pruning: %r is not logged during validation; this trial runs to the end.", self.monitor
                )
                self._warned = True
            return
        self.trial.report(value, step=trainer.current_epoch)
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {trainer.current_epoch}: {self.monitor}={value:.4f}")
