"""``torchvision.transforms.v2`` pipelines for instance segmentation: boxes and masks move with the image.

Images are resized as torchvision's detectors do it: the shorter side to ``min_size`` unless the longer
side would then exceed ``max_size``. Training draws the shorter side from a range around ``min_size``
(scale jitter), flips horizontally and jitters colours; both end with float images in [0, 1] and drop
instances whose box shrank below one pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torchvision.transforms import v2

#: Shorter-side sizes are drawn from ``min_size * scale`` rounded to this multiple.
_SIZE_STEP = 8


def scale_jitter_sizes(min_size: int, scale_range: tuple[float, float], steps: int = 9) -> list[int]:
    """Return the shorter sides training draws from: ``steps`` values across ``min_size * scale_range``."""
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range={scale_range}: expected 0 < low <= high, e.g. (0.8, 1.2).")
    sizes = {
        max(
            _SIZE_STEP,
            round(min_size * (low + (high - low) * k / max(steps - 1, 1)) / _SIZE_STEP) * _SIZE_STEP,
        )
        for k in range(steps)
    }
    return sorted(sizes)


def fitted_size(width: int, height: int, min_size: int, max_size: int) -> tuple[int, int]:
    """``(width, height)`` with the shorter side ``min_size``, unless the longer would exceed ``max_size``.

    The size ``v2.RandomShortestSize`` and torchvision's detectors resize to (never upscaled here: an
    image smaller than that is loaded at its own size and resized by the transforms).
    """
    ratio = min(min_size / min(width, height), max_size / max(width, height))
    if ratio >= 1:
        return width, height
    return max(1, int(width * ratio)), max(1, int(height * ratio))


def load_size(
    min_size: int, max_size: int, scale_range: tuple[float, float] = (1.0, 1.0)
) -> Callable[[int, int], tuple[int, int]]:
    """The size to load an image at: the largest that :func:`train_transforms` (or eval) can resize it to."""
    largest = max(scale_jitter_sizes(min_size, scale_range)) if scale_range != (1.0, 1.0) else min_size
    return partial(fitted_size, min_size=largest, max_size=max_size)


def eval_transforms(min_size: int, max_size: int) -> v2.Compose:
    """Deterministic resize and conversion to float, for validation, test and prediction."""
    return v2.Compose(
        [
            v2.RandomShortestSize(min_size=[min_size], max_size=max_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.SanitizeBoundingBoxes(min_size=1),
        ]
    )


def train_transforms(
    min_size: int,
    max_size: int,
    scale_range: tuple[float, float] = (0.8, 1.2),
    hflip: float = 0.5,
    color_jitter: float = 0.2,
) -> v2.Compose:
    """Augmentations for training.

    Args:
        min_size: Target shorter side.
        max_size: Longest side allowed.
        scale_range: Range of the shorter side relative to ``min_size`` (scale jitter); ``(1, 1)`` for none.
        hflip: Probability of a horizontal flip.
        color_jitter: Brightness, contrast and saturation jitter (hue gets a tenth of it); 0 for none.

    """
    steps: list[v2.Transform] = [
        v2.RandomHorizontalFlip(hflip),
        v2.RandomShortestSize(min_size=scale_jitter_sizes(min_size, scale_range), max_size=max_size),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter, min(0.5, color_jitter / 10)))
    steps += [v2.ToDtype(torch.float32, scale=True), v2.SanitizeBoundingBoxes(min_size=1)]
    return v2.Compose(steps)
