"""Write the validation split's reference profile at the end of ``fit`` (the baseline of monitoring)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.monitoring.features import EmbeddingCapture
from harvest.monitoring.reference_profile import write_profile
from harvest.monitoring.stats import MonitorStats, observe
from harvest.tracking.context import run_dir

log = logging.getLogger(__name__)


def _labels(batch: Any) -> Any:
    return batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 and torch.is_tensor(batch[1]) else None


class ReferenceProfile(Callback):
    """Profile the best checkpoint on the validation split when ``fit`` ends.

    The profile (class prior, predicted-class or detections-per-image distribution, confidences
    and their histogram, embedding sample and statistics) goes into the run directory as
    ``reference_profile.json`` and ``reference_embeddings.npz``; the registry packages both, and
    ``harvest monitor`` compares new images with them. Place it before ``ModelRegistryUpload``.

    Args:
        score_threshold: Detection score counted as a detection (detectors only; as ``InferenceMonitor``).
        max_batches: Profile at most this many validation batches (all by default).

    """

    def __init__(self, score_threshold: float = 0.5, max_batches: int | None = None) -> None:
        self.score_threshold = score_threshold
        self.max_batches = max_batches
        self.path: Path | None = None

    def _module(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> pl.LightningModule:
        """The best checkpoint's model (what gets registered), else the trained one."""
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best and Path(best).is_file():
            return type(pl_module).load_from_checkpoint(best, map_location=pl_module.device, weights_only=True)
        return pl_module

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return
        module = self._module(trainer, pl_module)
        was_training = module.training
        module.eval()
        detector = not hasattr(module, "classify")
        stats = MonitorStats("detector" if detector else "classifier", list(getattr(module, "class_names", [])))
        prior: Counter = Counter()
        with EmbeddingCapture(module) as capture, torch.inference_mode():
            for index, batch in enumerate(datamodule.val_dataloader()):
                if self.max_batches is not None and index >= self.max_batches:
                    break
                batch = move_data_to_device(batch, module.device)
                labels = _labels(batch)
                if labels is not None:
                    prior.update(stats.class_names[i] for i in labels.tolist() if 0 <= i < len(stats.class_names))
                outputs = module.predict_step(batch, index)
                stats.add(*observe(outputs, labels, self.score_threshold), seconds=0.0, embeddings=capture.take())
        module.train(was_training)
        about: dict[str, Any] = {"split": "val", "score_threshold": self.score_threshold}
        if prior:
            about["class_prior"] = {name: prior.get(name, 0) for name in stats.class_names}
        self.path = write_profile(run_dir(trainer), stats, **about)
        log.info("reference profile of %d validation images: %s", stats.samples, self.path)
