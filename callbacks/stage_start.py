"""Base of the tracker callbacks: one hook when ``fit``, ``validate`` or ``test`` starts."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback


class StageStartCallback(Callback):
    """Calls :meth:`stage_started` when ``fit``, ``validate`` or ``test`` starts.

    That is after every ``setup`` hook, so the CLI's ``<run dir>/config.yaml`` is written and the
    loggers' runs exist. The validation inside ``fit`` does not count as a start of its own.
    """

    def stage_started(self, trainer: pl.Trainer) -> None:
        """What to do when a stage starts (subclasses override it)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stage_started(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stage_started(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.stage_started(trainer)
