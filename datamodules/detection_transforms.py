"""``torchvision.transforms.v2`` pipelines for instance segmentation: boxes and masks move with the image.

Images are resized as torchvision's detectors do it: the shorter side to ``min_size`` unless the longer
side would then exceed ``max_size``. Training draws the shorter side from a range around ``min_size``
(scale jitter), flips horizontally and jitters colours (:class:`AffineColorJitter`); both end with float
images in [0, 1] and drop instances whose box shrank below one pixel. :func:`load_size` is the size a
data set loads an image at: the largest these transforms can resize it to.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torchvision import tv_tensors
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
            SanitizeBoxes(min_size=1),
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
    steps: list[v2.Transform] = [  # resize first: the flip then moves the fewest pixels
        v2.RandomShortestSize(min_size=scale_jitter_sizes(min_size, scale_range), max_size=max_size),
        v2.RandomHorizontalFlip(hflip),
    ]
    if color_jitter > 0:
        steps.append(AffineColorJitter(color_jitter, min(0.5, color_jitter / 10)))
    steps += [v2.ToDtype(torch.float32, scale=True), SanitizeBoxes(min_size=1)]
    return v2.Compose(steps)


class SanitizeBoxes(v2.SanitizeBoundingBoxes):
    """``v2.SanitizeBoundingBoxes`` that copies nothing when every box is valid (the usual case).

    torchvision's indexes boxes, labels and every mask with the validity mask even when it is all true.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:  # noqa: D102 - torchvision's hook
        return inpt if bool(params["valid"].all()) else super().transform(inpt, params)


#: torchvision's grayscale weights (``rgb_to_grayscale``).
_GRAY = torch.tensor([0.2989, 0.587, 0.114])


def hue_rotation(turns: float) -> torch.Tensor:
    """The 3x3 RGB rotation by ``turns`` of a full turn about the gray axis (grays stay put)."""
    angle = 2 * math.pi * turns
    axis = torch.full((3,), 1 / math.sqrt(3))
    cross = torch.tensor([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return math.cos(angle) * torch.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * torch.outer(axis, axis)


class AffineColorJitter(v2.Transform):
    """``v2.ColorJitter``'s brightness, contrast, saturation and hue, as one affine colour map.

    Brightness, contrast and saturation are ``ColorJitter``'s own formulas (linear in RGB); hue is a
    rotation of RGB about the gray axis, where ``ColorJitter`` shifts the HSV hue (same direction and
    range, not the same pixels: HSV's hexcone is not linear). So the four, in a random order as
    ``ColorJitter`` applies them, compose to one 3x3 matrix and offset, applied in one pass and clipped
    to [0, 1] once (``ColorJitter`` clips after each step): at 1024 px a fraction of ``ColorJitter``'s
    cost, whose hue step converts every pixel to HSV and back. Only images change (boxes and masks pass
    through); the output is ``float32`` in [0, 1].

    Args:
        strength: Brightness, contrast and saturation factors are drawn from ``[1 - s, 1 + s]``.
        hue: The hue shift is drawn from ``[-hue, hue]`` (a fraction of a full turn).

    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, strength: float, hue: float = 0.0) -> None:
        super().__init__()
        if strength < 0 or not 0 <= hue <= 0.5:
            raise ValueError(f"color jitter strength={strength}, hue={hue}: expected strength >= 0, 0 <= hue <= 0.5.")
        self.strength, self.hue = strength, hue

    def make_params(self, flat_inputs: list) -> dict:  # noqa: D102 - torchvision's hook
        low, high = max(0.0, 1 - self.strength), 1 + self.strength
        factors = torch.empty(3).uniform_(low, high)
        return {
            "order": torch.randperm(4).tolist(),
            "factors": factors.tolist(),
            "hue": float(torch.empty(()).uniform_(-self.hue, self.hue)),
        }

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:  # noqa: D102 - torchvision's hook
        scale = 255.0 if inpt.dtype == torch.uint8 else 1.0
        pixels = inpt.as_subclass(torch.Tensor).reshape(3, -1).float()
        matrix, offset = torch.eye(3), torch.zeros(3)
        mean = pixels.mean(dim=1) / scale
        brightness, contrast, saturation = params["factors"]
        for op in params["order"]:
            if op == 0:
                step, shift = brightness * torch.eye(3), torch.zeros(3)
            elif op == 1:  # blend with the mean gray of the image as it is at this point
                step = contrast * torch.eye(3)
                shift = (1 - contrast) * (_GRAY @ (matrix @ mean + offset)) * torch.ones(3)
            elif op == 2:  # blend with the image's own grayscale
                step, shift = saturation * torch.eye(3) + (1 - saturation) * _GRAY.expand(3, 3), torch.zeros(3)
            else:
                step, shift = hue_rotation(params["hue"]), torch.zeros(3)
            matrix, offset = step @ matrix, step @ offset + shift
        out = torch.addmm(offset[:, None], matrix / scale, pixels).clamp_(0, 1)
        return tv_tensors.wrap(out.reshape(inpt.shape), like=inpt)
