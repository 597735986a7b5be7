"""Overlays of a detector's predictions (masks, boxes, scores) on validation images, every N epochs."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from PIL import Image
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from callbacks.logger_media import log_image_file
from harvest.run_directory import run_dir

_GROUND_TRUTH = "white"
_PALETTE = ["#ff3b30", "#ffcc00", "#00c7be", "#007aff", "#af52de", "#ff9500", "#ff2d55"]


def overlay(
    image: Tensor,
    detections: dict[str, Tensor],
    class_names: list[str],
    target: dict[str, Tensor] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
) -> Tensor:
    """Draw detections scoring at least ``score_threshold`` (and ground-truth boxes in white) on ``image``.

    Args:
        image: ``float[3, H, W]`` in [0, 1] or ``uint8``.
        detections: ``boxes``, ``labels``, ``scores`` and ``masks`` (probabilities ``[N, 1, H, W]`` or boolean
            ``[N, H, W]``).
        class_names: Names by label index.
        target: Ground truth with ``boxes``, drawn as thin white boxes.
        score_threshold: Lowest score drawn.
        mask_threshold: Mask probability above which a pixel is drawn.

    Returns:
        The overlay, ``uint8[3, H, W]``.

    """
    canvas = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).to(torch.uint8)
    keep = detections["scores"] >= score_threshold
    masks = detections["masks"][keep]
    masks = masks[:, 0] > mask_threshold if masks.dim() == 4 else masks.bool()
    colours = [_PALETTE[i % len(_PALETTE)] for i in range(int(keep.sum()))]
    if len(masks):
        canvas = draw_segmentation_masks(canvas, masks, alpha=0.45, colors=colours)
    if target is not None and len(target["boxes"]):
        canvas = draw_bounding_boxes(canvas, target["boxes"], colors=_GROUND_TRUTH, width=1)
    if len(masks):
        labels = [
            f"{class_names[int(label)] if int(label) < len(class_names) else int(label)} {float(score):.2f}"
            for label, score in zip(detections["labels"][keep], detections["scores"][keep], strict=True)
        ]
        canvas = draw_bounding_boxes(
            canvas, detections["boxes"][keep].float(), labels=labels, colors=colours, width=2
        )
    return canvas


class PredictionImages(Callback):
    """Every ``every_n_epochs`` validation epochs (and the last), draw predictions on validation images.

    The grid is written to ``<run dir>/plots/predictions_epoch<NNN>.png`` and sent to every attached logger
    that takes images (TensorBoard's Images tab, W&B media, an MLflow artifact); without loggers only the
    file is written. Runs on rank zero; needs a LightningModule whose ``validation_step`` returns the
    detector's outputs (as :class:`~lightning_modules.MaskRCNNModule` does) and does nothing otherwise.

    Args:
        every_n_epochs: Draw after every this many validation epochs.
        max_images: Validation images in the grid.
        score_threshold: Lowest score drawn.
        dirname: Folder inside the run directory.

    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        max_images: int = 4,
        score_threshold: float = 0.5,
        dirname: str = "plots",
    ) -> None:
        self.every_n_epochs = max(1, every_n_epochs)
        self.max_images = max_images
        self.score_threshold = score_threshold
        self.dirname = dirname
        self._drawn: list[Tensor] = []

    def _due(self, trainer: pl.Trainer) -> bool:
        epoch = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and (epoch % self.every_n_epochs == 0 or last)
        )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start a new grid."""
        self._drawn = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Draw the batch's first images until the grid is full (on due epochs)."""
        if len(self._drawn) >= self.max_images or not self._due(trainer) or not isinstance(outputs, list):
            return
        images, targets = batch
        class_names = list(getattr(pl_module, "class_names", None) or [])
        for image, detections, target in zip(images, outputs, targets, strict=False):
            if not isinstance(detections, dict) or "masks" not in detections:
                return
            if len(self._drawn) < self.max_images:
                cpu = {k: v.detach().cpu() for k, v in detections.items()}
                truth = {k: v.cpu() for k, v in target.items()}
                self._drawn.append(overlay(image.cpu(), cpu, class_names, truth, self.score_threshold))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the grid and send it to the loggers."""
        if not self._drawn or not self._due(trainer):
            return
        height = max(d.shape[1] for d in self._drawn)
        width = max(d.shape[2] for d in self._drawn)
        padded = [
            torch.nn.functional.pad(d, (0, width - d.shape[2], 0, height - d.shape[1])) for d in self._drawn
        ]
        grid = make_grid(padded, nrow=min(len(padded), 4), padding=4, pad_value=255)
        path = (
            run_dir(trainer)
            / self.dirname
            / f"predictions_epoch{trainer.current_epoch:03d}.png"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
        log_image_file(trainer, "predictions", path, step=trainer.global_step)
        self._drawn = []
