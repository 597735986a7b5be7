"""W&B model artifacts of the run's best and last checkpoints, aliased ``best`` and ``latest``."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.runs.directory import scalar_metrics, sha256_file
from harvest.tracking.context import loggers_of, run_name

log = logging.getLogger(__name__)


class CheckpointArtifacts(Callback):
    """At the end of ``fit``, upload the best and the last checkpoint as one W&B ``model`` artifact.

    The best checkpoint gets the alias ``best``, the last one ``latest`` (both when they are the
    same file); each version's metadata holds the monitored metric, its mode and score, the run
    name, the original file name and the file's SHA-256. Offline runs log the artifact locally and
    ``wandb sync`` uploads it. Unlike ``WandbLogger(log_model=True)`` this works offline and uploads
    two files, not every checkpoint. A no-op without a ``WandbLogger`` or a ``ModelCheckpoint``.

    Args:
        name: Artifact name (default: ``model-<run name>``).

    """

    def __init__(self, name: str | None = None) -> None:
        self.name = name

    @staticmethod
    def _versions(checkpoint: ModelCheckpoint) -> dict[str, list[str]]:
        versions: dict[str, list[str]] = {}
        for path, alias in ((checkpoint.best_model_path, "best"), (checkpoint.last_model_path, "latest")):
            if path and Path(path).is_file():
                versions.setdefault(path, []).append(alias)
        if versions and not any("latest" in aliases for aliases in versions.values()):
            versions[checkpoint.best_model_path].append(
                "latest"
            )  # no last.ckpt: the best one is also the latest
        return versions

    @staticmethod
    def _score(checkpoint: ModelCheckpoint, path: str, trainer: pl.Trainer) -> float | None:
        score: Any = checkpoint.best_k_models.get(path)
        if score is None and path == checkpoint.best_model_path:
            score = checkpoint.best_model_score
        if score is None and checkpoint.monitor:
            score = trainer.callback_metrics.get(checkpoint.monitor)
        return scalar_metrics({"s": score}).get("s") if score is not None else None

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = loggers_of(trainer, WandbLogger)
        checkpoint = trainer.checkpoint_callback
        if not loggers or not isinstance(checkpoint, ModelCheckpoint):
            return
        import wandb

        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name or f"model-{run_name(trainer)}")
        for path, aliases in self._versions(checkpoint).items():
            metadata = {
                "monitor": checkpoint.monitor,
                "mode": checkpoint.mode,
                "score": self._score(checkpoint, path, trainer),
                "run_name": run_name(trainer),
                "original_filename": Path(path).name,
                "sha256": sha256_file(Path(path)),
            }
            for logger in loggers:
                artifact = wandb.Artifact(name, type="model", metadata=metadata)
                artifact.add_file(path, name="model.ckpt")
                logger.experiment.log_artifact(artifact, aliases=aliases)
            log.info("W&B model artifact %s (%s): %s", name, ", ".join(aliases), path)
