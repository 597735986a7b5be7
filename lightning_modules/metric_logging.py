"""Logging metrics from hooks where ``self.log`` is not allowed (``on_train_end``, ``on_fit_end``)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


def log_outside_loop(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Send ``metrics`` to every attached logger and into ``trainer.callback_metrics``.

    What ``self.log`` does inside the loops: loggers record the values at the current global step
    (loggers write on rank zero only), and callbacks reading ``trainer.callback_metrics`` (checkpoint
    summaries, reports, trackers) see them. Call it with the same values on every rank.

    Args:
        trainer: The running trainer.
        metrics: Metric name -> value.

    """
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in values.items()})
