"""Send a file the run wrote (a PNG plot, a JSON table) to every attached logger that takes it."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from callbacks.mlflow_tracking import server_problem, tracker_errors, tracking_uri
from harvest.core.errors import first_line
from harvest.tracking.context import run_dir

log = logging.getLogger(__name__)


def log_image_file(trainer: pl.Trainer, key: str, path: Path, step: int | None = None) -> None:
    """Show the image at ``path`` in TensorBoard's Images tab and W&B's media panel, and store it in MLflow.

    Call on rank zero. MLflow keeps the file as an artifact under its folder relative to the run
    directory (``plots/...``); a failing MLflow store is reported in one line and skipped.

    Args:
        trainer: The trainer whose loggers receive the image.
        key: Image name in TensorBoard and W&B, e.g. ``confusion_matrix/label_spreading``.
        path: The image file (inside the run directory for MLflow's folder layout).
        step: Global step to file it under (default: the trainer's).

    """
    step = trainer.global_step if step is None else step
    pixels = None
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            pixels = pixels if pixels is not None else np.asarray(Image.open(path).convert("RGB"))
            logger.experiment.add_image(key, pixels, step, dataformats="HWC")
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=step)
        elif isinstance(logger, MLFlowLogger):
            log_artifact_file(trainer, logger, path)


def log_artifact_file(trainer: pl.Trainer, logger: MLFlowLogger, path: Path) -> None:
    """Upload ``path`` to the logger's MLflow run, under its folder relative to the run directory."""
    try:
        folder = path.resolve().parent.relative_to(run_dir(trainer).resolve()).as_posix()
    except ValueError:
        folder = None
    problem = server_problem(
        tracking_uri(logger), timeout=5.0
    )  # no upload (and its retries) to a dead server
    if problem:
        log.warning("MLflow: could not store %s (%s); it stays in the run directory.", path, problem)
        return
    try:
        logger.experiment.log_artifact(logger.run_id, str(path), None if folder in (None, ".") else folder)
    except tracker_errors() as error:
        log.warning(
            "MLflow: could not store %s (%s); it stays in the run directory.",
            path,
            first_line(error),
        )
