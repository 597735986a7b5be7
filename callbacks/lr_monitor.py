"""Lightning's learning-rate monitor, quiet when a run has no logger."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor


class LearningRateLogger(LearningRateMonitor):
    """``LearningRateMonitor`` that does nothing when the trainer has no logger.

    Lightning's raises at the start of training without a logger, so a config listing it could not
    run with ``--trainer.logger false``; with this one the same config runs with or without loggers.
    Arguments are those of :class:`~lightning.pytorch.callbacks.LearningRateMonitor`.
    """

    def on_train_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
