"""TensorBoard: the resolved config in the HParams tab beside the final metrics; histograms, graph."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.utils.tensorboard.summary import hparams

from callbacks.stage_start import StageStartCallback
from harvest.core.errors import first_line
from harvest.tracking.context import loggers_of, run_config, tracked_params

log = logging.getLogger(__name__)


class TensorBoardTracking(StageStartCallback):
    """Make TensorBoard runs comparable in the HParams tab; a no-op without a ``TensorBoardLogger``.

    When a stage starts, the tunable part of the resolved config (``tracked_params``) is written as the
    run's hyperparameters: a session-start record without an experiment record, so TensorBoard
    builds the HParams table from every run under ``tensorboard --logdir runs``, each with its own
    config columns, and every scalar the runs logged as a metric column showing its last value (the
    final ``summary/best_test_accuracy``, ``val/segm_map``...). Lightning's placeholder
    ``hp_metric`` is switched off: its experiment record would hide the config columns.

    Args:
        histograms: Write weight and gradient histograms (``weights/<name>``, ``gradients/<name>``).
        histogram_every_n_epochs: How often histograms are written.
        graph: Trace the model on the first training batch's inputs and add its graph.

    """

    def __init__(
        self, histograms: bool = False, histogram_every_n_epochs: int = 1, graph: bool = False
    ) -> None:
        self.histograms = histograms
        self.histogram_every_n_epochs = max(1, histogram_every_n_epochs)
        self.graph = graph
        self._started: set[int] = set()
        self._gradients_due = False

    # ------------------------------------------------------------------ hparams
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for logger in loggers_of(trainer, TensorBoardLogger):
            logger._default_hp_metric = False  # no placeholder experiment record (see the class docstring)

    @rank_zero_only
    def stage_started(self, trainer: pl.Trainer) -> None:
        config = run_config(trainer)
        for logger in loggers_of(trainer, TensorBoardLogger):
            if id(logger) in self._started or config is None:
                continue
            _, session_start, _ = hparams(tracked_params(config), {})
            logger.experiment._get_file_writer().add_summary(session_start)
            self._started.add(id(logger))

    # ------------------------------------------------------------------ histograms and graph
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._gradients_due = self.histograms and trainer.current_epoch % self.histogram_every_n_epochs == 0

    @rank_zero_only
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any
    ) -> None:
        if not self._gradients_due:
            return
        self._gradients_due = False
        for logger in loggers_of(trainer, TensorBoardLogger):
            for name, param in pl_module.named_parameters():
                if param.grad is not None:
                    logger.experiment.add_histogram(
                        f"gradients/{name}", param.grad.detach().float().cpu(), trainer.global_step
                    )

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.histograms or trainer.current_epoch % self.histogram_every_n_epochs:
            return
        for logger in loggers_of(trainer, TensorBoardLogger):
            for name, param in pl_module.named_parameters():
                logger.experiment.add_histogram(
                    f"weights/{name}", param.detach().float().cpu(), trainer.global_step
                )

    @rank_zero_only
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.graph or trainer.global_step > 0 or batch_idx > 0:
            return
        self.graph = False
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        training = pl_module.training
        try:
            pl_module.eval()
            with torch.no_grad():
                for logger in loggers_of(trainer, TensorBoardLogger):
                    logger.experiment.add_graph(pl_module, inputs)
        except (RuntimeError, TypeError, ValueError, AttributeError) as error:
            log.warning(
                "TensorBoard graph: %s cannot be traced on its batch inputs (%s); no graph written.",
                type(pl_module).__name__,
                first_line(error),
            )
        finally:
            pl_module.train(training)
