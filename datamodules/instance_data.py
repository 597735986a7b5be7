"""Annotated images for instance segmentation: samples, their checks, masks and the torch Dataset.

Whatever the annotation format (VIA polygons, COCO polygons or RLE), an instance is kept as a COCO
``segmentation`` and rasterised by pycocotools, so every format yields the same masks. Checks return
one-line messages naming the file, the problem and the fix; loaders decide whether to raise or skip.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from datamodules.via import AnnotationError

#: Polygon points may lie this many pixels outside the image (tools snap to the border); they are clipped.
BORDER_TOLERANCE = 2.0

Segmentation = list[list[float]] | dict[str, Any]


@dataclass(frozen=True)
class Instance:
    """One object: its class index (0 is background) and its COCO segmentation (polygons or RLE)."""

    label: int
    segmentation: Segmentation


@dataclass
class Sample:
    """One image file, the annotation file it came from, its size and its instances (none: a negative)."""

    image: Path
    annotation: Path
    width: int
    height: int
    instances: list[Instance] = field(default_factory=list)

    def rles(self) -> list[dict[str, Any]]:
        """One COCO RLE per instance, polygons of one instance merged."""
        out = []
        for inst in self.instances:
            seg = inst.segmentation
            if isinstance(seg, list):
                out.append(mask_utils.merge(mask_utils.frPyObjects(seg, self.height, self.width)))
            elif isinstance(seg.get("counts"), list):
                out.append(mask_utils.frPyObjects(seg, self.height, self.width))
            else:
                out.append(seg)
        return out

    def masks(self) -> np.ndarray:
        """Instance masks, ``uint8[N, H, W]``."""
        rles = self.rles()
        if not rles:
            return np.zeros((0, self.height, self.width), dtype=np.uint8)
        return np.ascontiguousarray(mask_utils.decode(rles).transpose(2, 0, 1))

    def areas(self) -> list[float]:
        """Mask area of each instance in pixels."""
        rles = self.rles()
        return [float(a) for a in mask_utils.area(rles)] if rles else []


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` read from the image header; raises :class:`AnnotationError` naming the file."""
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise AnnotationError(
            f"{path}: image file is missing: restore it or remove its annotations."
        ) from None
    except (UnidentifiedImageError, OSError) as err:
        raise AnnotationError(
            f"{path}: cannot be read as an image ({err}): replace or remove the file."
        ) from None


def check_decodes(path: Path) -> None:
    """Decode the whole image (a truncated file passes a header read); raise :class:`AnnotationError`."""
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as err:
        raise AnnotationError(f"{path}: cannot be decoded ({err}): replace or remove the file.") from None


def checked_polygon(polygon: list[float], width: int, height: int, where: str) -> list[float]:
    """Check that ``polygon`` has 3+ points inside the image (within a tolerance); return it clipped.

    Args:
        polygon: Flat ``[x0, y0, x1, y1, …]`` coordinates.
        width: Image width.
        height: Image height.
        where: File (and row or annotation id) named in error messages.

    """
    if len(polygon) < 6 or len(polygon) % 2:
        raise AnnotationError(
            f"{where}: polygon has {len(polygon) // 2} point(s), a mask needs at least 3: redraw or delete "
            "the region."
        )
    xs, ys = np.asarray(polygon[0::2], dtype=float), np.asarray(polygon[1::2], dtype=float)
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        raise AnnotationError(f"{where}: polygon has a non-finite coordinate: redraw or delete the region.")
    t = BORDER_TOLERANCE
    if xs.min() < -t or ys.min() < -t or xs.max() > width + t or ys.max() > height + t:
        raise AnnotationError(
            f"{where}: polygon spans x {xs.min():.0f}..{xs.max():.0f}, y {ys.min():.0f}..{ys.max():.0f}, "
            "outside the "
            f"{width}x{height} image: it belongs to another image or was drawn on a resized copy; redraw it."
        )
    xs, ys = xs.clip(0, width), ys.clip(0, height)
    if abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) < 1e-6:
        raise AnnotationError(f"{where}: polygon has zero area: redraw or delete the region.")
    return [float(v) for xy in zip(xs, ys, strict=True) for v in xy]


def boxes_from_masks(masks: torch.Tensor) -> torch.Tensor:
    """Return ``float32[N, 4]`` xyxy boxes around each mask's pixels (as COCO: ``x2 = last column + 1``)."""
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32)
    for i, mask in enumerate(masks):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        if len(xs):
            boxes[i] = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
    return boxes


class InstanceDataset(Dataset):
    """Images and torchvision detection targets (``boxes``, ``labels``, ``masks``) for a list of samples.

    Args:
        samples: The annotated images.
        transforms: A ``torchvision.transforms.v2`` transform taking ``(image, target)``.

    """

    def __init__(self, samples: list[Sample], transforms: Callable[..., Any] | None = None) -> None:
        self.samples = samples
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    def load_image(self, index: int) -> torch.Tensor:
        """Decode image ``index`` as ``uint8[3, H, W]``; raise :class:`AnnotationError` naming a bad file."""
        sample = self.samples[index]
        try:
            image = decode_image(str(sample.image), mode=ImageReadMode.RGB)
        except (RuntimeError, OSError) as err:
            raise AnnotationError(
                f"{sample.image}: cannot be decoded ({err}): replace or remove the file."
            ) from None
        if tuple(image.shape[-2:]) != (sample.height, sample.width):
            raise AnnotationError(
                f"{sample.image}: decoded as {image.shape[-1]}x{image.shape[-2]} but annotated as "
                f"{sample.width}x{sample.height}: the file changed after annotation; fix its annotations."
            )
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        sample = self.samples[index]
        image = tv_tensors.Image(self.load_image(index))
        masks = torch.from_numpy(sample.masks())
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                boxes_from_masks(masks), format="XYXY", canvas_size=(sample.height, sample.width)
            ),
            "labels": torch.tensor([inst.label for inst in sample.instances], dtype=torch.int64),
            "masks": tv_tensors.Mask(masks),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    """Torchvision's detection collate: a list of images and a list of targets."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
