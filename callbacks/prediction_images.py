"""Overlays of a detector's predictions on validation images, every N epochs: what is truth, what is predicted.

Each panel has a title (the image and the epoch) and a legend: ground-truth objects are white outlines,
predictions are filled masks with a box in their class's colour and a ``class score`` label; labels are
placed so that they do not cover one another.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks, make_grid

from callbacks.logger_media import log_image_file
from harvest.runs.directory import run_dir

_GROUND_TRUTH = (255, 255, 255)
_PALETTE = ["#ff3b30", "#ffcc00", "#00c7be", "#007aff", "#af52de", "#ff9500", "#ff2d55"]
_LINE = 15  # pixels per line of the title and the legend above the image
Box = tuple[int, int, int, int]


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def class_colour(label: int) -> str:
    """The colour of a class: the same in every panel and in the legend."""
    return _PALETTE[(int(label) - 1) % len(_PALETTE)]


def outlines(masks: Tensor, width: int = 1) -> Tensor:
    """The boundary pixels of boolean masks ``[N, H, W]`` (about ``width`` pixels thick), merged into ``[H, W]``."""
    if not len(masks):
        return torch.zeros(masks.shape[-2:], dtype=torch.bool)
    filled = masks.float()[:, None]
    eroded = -F.max_pool2d(-filled, kernel_size=2 * width + 1, stride=1, padding=width)
    return ((filled - eroded) > 0)[:, 0].any(0)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: list[Box], sizes: list[tuple[int, int]], bounds: tuple[int, int]) -> list[Box]:
    """Where to put a label of each size near its box so that no two labels overlap.

    Tried in turn: above the box, inside its top, below it, then every row of the image from the top; a
    label that fits nowhere goes above its box anyway.

    Args:
        boxes: Detection boxes ``(x1, y1, x2, y2)``, most confident first (they get the best spots).
        sizes: Label ``(width, height)`` in pixels.
        bounds: Image ``(width, height)``.

    """
    width, height = bounds
    taken: list[Box] = []
    for (x1, y1, _, y2), (w, h) in zip(boxes, sizes, strict=True):
        x = int(min(max(0, x1), max(0, width - w)))
        rows = [y1 - h - 1, y1 + 1, y2 + 1, *range(0, max(1, height - h + 1), h + 1)]
        spots = [(x, int(y), x + w, int(y) + h) for y in rows if 0 <= y <= height - h]
        free = next((s for s in spots if not any(_overlaps(s, t) for t in taken)), None)
        taken.append(free or (x, max(0, int(y1) - h - 1), x + w, max(0, int(y1) - h - 1) + h))
    return taken


def overlay(
    image: Tensor,
    detections: dict[str, Tensor],
    class_names: list[str],
    target: dict[str, Tensor] | None = None,
    score_threshold: float = 0.5,
    mask_threshold: float = 0.5,
    title: str = "",
) -> Tensor:
    """Draw ground truth (white outlines) and detections scoring at least ``score_threshold`` on ``image``.

    Args:
        image: ``float[3, H, W]`` in [0, 1] or ``uint8``.
        detections: ``boxes``, ``labels``, ``scores`` and ``masks`` (probabilities ``[N, 1, H, W]`` or boolean
            ``[N, H, W]``).
        class_names: Names by label index.
        target: Ground truth with ``masks`` (outlined) or only ``boxes`` (drawn as white boxes).
        score_threshold: Lowest score drawn.
        mask_threshold: Mask probability above which a pixel is drawn.
        title: The panel's title, above the legend.

    Returns:
        The panel, ``uint8[3, header + H, max(W, legend)]``: title and legend above the image.

    """
    canvas = image if image.dtype == torch.uint8 else (image.clamp(0, 1) * 255).to(torch.uint8)
    keep = (detections["scores"] >= score_threshold).nonzero()[:, 0]
    keep = keep[detections["scores"][keep].argsort(descending=True)]
    masks = detections["masks"][keep]
    masks = masks[:, 0] > mask_threshold if masks.dim() == 4 else masks.bool()
    labels = [int(label) for label in detections["labels"][keep]]
    for mask, label in reversed(list(zip(masks, labels, strict=True))):  # one at a time: overlaps stay coloured
        canvas = draw_segmentation_masks(canvas, mask[None], alpha=0.4, colors=[class_colour(label)])
    if labels:
        colours = [class_colour(c) for c in labels]
        canvas = draw_bounding_boxes(canvas, detections["boxes"][keep].float(), colors=colours, width=2)
    if target is not None and "masks" in target and len(target["masks"]):
        edge = outlines(target["masks"].bool())
        canvas = torch.where(edge, torch.tensor(_GROUND_TRUTH, dtype=torch.uint8)[:, None, None], canvas)
    elif target is not None and len(target["boxes"]):
        canvas = draw_bounding_boxes(canvas, target["boxes"].float(), colors=_GROUND_TRUTH, width=1)
    font = _font()
    entries: list[tuple[str, str | None]] = [("ground truth", None)]
    entries += [(f"{_name(class_names, c)} (predicted)", class_colour(c)) for c in sorted(set(labels))]
    height, width = canvas.shape[-2:]
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width_needed = max([width, int(measure.textlength(title, font=font)) + 4])
    rows = _legend_rows(entries, [int(measure.textlength(t, font=font)) + 20 for t, _ in entries], width_needed)
    header = _LINE * (1 + len(rows)) + 2
    panel = Image.new("RGB", (width_needed, header + height), "white")
    panel.paste(Image.fromarray(canvas.permute(1, 2, 0).numpy()), (0, header))
    draw = ImageDraw.Draw(panel)
    draw.text((2, 1), title, fill="black", font=font)
    for row, placed in enumerate(rows, start=1):
        for (text, colour), x in placed:
            top = row * _LINE + 2
            draw.rectangle([x, top + 1, x + 11, top + 11], fill=colour or (70, 70, 70))
            if colour is None:  # ground truth: a white outline, as on the image
                draw.rectangle([x + 2, top + 3, x + 9, top + 9], outline=_GROUND_TRUTH)
            draw.text((x + 15, top), text, fill="black", font=font)
    scores = detections["scores"][keep].tolist()
    texts = [f"{_name(class_names, c)} {s:.2f}" for c, s in zip(labels, scores, strict=True)]
    boxes = [tuple(int(v) for v in box) for box in detections["boxes"][keep].float().tolist()]
    sizes = [(int(draw.textlength(t, font=font)) + 4, 13) for t in texts]
    for text, label, spot in zip(texts, labels, place_labels(boxes, sizes, (width, height)), strict=True):
        draw.rectangle([spot[0], spot[1] + header, spot[2], spot[3] + header], fill=class_colour(label))
        draw.text((spot[0] + 2, spot[1] + header), text, fill="black", font=font)
    return torch.from_numpy(np.asarray(panel).copy()).permute(2, 0, 1).contiguous()


def _name(class_names: list[str], label: int) -> str:
    return class_names[label] if label < len(class_names) else str(label)


def _legend_rows(entries: list, widths: list[int], width: int) -> list[list]:
    """Legend entries flowed into rows no wider than ``width``: ``[[(entry, x), …], …]``."""
    rows: list[list] = [[]]
    x = 2
    for entry, w in zip(entries, widths, strict=True):
        if rows[-1] and x + w > width:
            rows.append([])
            x = 2
        rows[-1].append((entry, x))
        x += w + 8
    return rows


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
                truth = {k: v.cpu() for k, v in target.items() if isinstance(v, Tensor)}
                image_id = int(truth["image_id"]) if "image_id" in truth else len(self._drawn) + 1
                title = f"validation image {image_id}, epoch {trainer.current_epoch}"
                self._drawn.append(overlay(image.cpu(), cpu, class_names, truth, self.score_threshold, title=title))

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
