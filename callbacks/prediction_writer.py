"""Write what ``harvest predict`` returns into the run directory, one JSON object per line."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from harvest.runs.directory import run_dir
from harvest.serving.model import detection_record

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class PredictionWriter(BasePredictionWriter):
    """Append every record ``predict_step`` returns (a list of dicts) to ``<run dir>/predictions.jsonl``.

    Tensors and numpy values become lists and numbers. A detector's records are written compactly
    (:func:`harvest.serving.model.detection_record`): the image's path, boxes and masks at the image's own
    size, class names, masks as COCO RLE instead of dense boolean lists. Under DDP every rank writes its own file,
    ``predictions.rank<N>.jsonl``.

    Args:
        filename: File name inside the run directory.

    """

    def __init__(self, filename: str = "predictions.jsonl") -> None:
        super().__init__(write_interval="batch")
        self.filename = filename
        self.count = 0

    def _path(self, trainer: pl.Trainer) -> Path:
        path = run_dir(trainer) / self.filename
        return (
            path.with_suffix(f".rank{trainer.global_rank}{path.suffix}") if trainer.world_size > 1 else path
        )

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.count = 0
        self._path(trainer).parent.mkdir(parents=True, exist_ok=True)
        self._path(trainer).write_text("")

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        records = prediction if isinstance(prediction, list) else [prediction]
        if records and isinstance(records[0], dict) and torch.is_tensor(records[0].get("masks")):
            records = self._compact(trainer, pl_module, records, batch_indices, dataloader_idx)
        with self._path(trainer).open("a") as file:
            for record in records:
                file.write(json.dumps(record, default=_plain) + "\n")
        self.count += len(records)

    @staticmethod
    def _compact(
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        records: list[dict[str, Any]],
        batch_indices: Sequence[int] | None,
        dataloader_idx: int,
    ) -> list[dict[str, Any]]:
        """Detections with the image's path, class names and RLE masks, at the image's own size."""
        loaders = trainer.predict_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        samples = getattr(getattr(loader, "dataset", None), "samples", None)
        class_names = list(getattr(pl_module, "class_names", []))
        out = []
        for k, record in enumerate(records):
            index = batch_indices[k] if batch_indices is not None and k < len(batch_indices) else None
            sample = samples[index] if samples is not None and index is not None else None
            height, width = record["masks"].shape[-2:]
            size = (sample.width, sample.height) if sample is not None else (width, height)
            path = str(sample.image) if sample is not None else None
            out.append(detection_record(record, size, class_names, path))
        return out

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        log.info("%d predictions written to %s", self.count, self._path(trainer))
