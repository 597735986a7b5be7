"""Annotated images for instance segmentation: samples, their checks, masks and the torch Dataset.

Whatever the annotation format (VIA polygons, COCO polygons or RLE), an instance is kept as a COCO
``segmentation`` and rasterised by pycocotools, so every format yields the same masks. Checks return
one-line messages naming the file, the problem and the fix; loaders decide whether to raise or skip.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch.utils.data import Dataset
from torchvision import tv_tensors

from datamodules.via import AnnotationError
from harvest.core.image_io import BadImageError, read_rgb, upright_size

log = logging.getLogger(__name__)

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
    """Upright ``(width, height)`` (EXIF orientation applied) from the header; :class:`AnnotationError` if bad."""
    if not path.is_file():
        raise AnnotationError(f"{path}: image file is missing: restore it or remove its annotations.")
    try:
        return upright_size(path)
    except BadImageError as err:
        why = str(err).removeprefix(f"{path}: cannot read image (").split("); replace")[0]
        raise AnnotationError(
            f"{path}: cannot be read as an image ({why}): replace or remove the file."
        ) from None


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


LoadSize = Callable[[int, int], tuple[int, int]]


class InstanceDataset(Dataset):
    """Images and torchvision detection targets (``boxes``, ``labels``, ``masks``) for a list of samples.

    An image is decoded (a JPEG at a reduced scale when that still covers its load size) and resized once
    to its load size, the largest the transforms can need; its masks are rasterised at that size from the
    polygons (scaled), never at the photo's full size. What does not change between epochs is kept: the
    masks cropped to their boxes, and the boxes, in memory; the loaded image in ``cache_dir`` (shared by
    the loader's worker processes). The transforms then move image, boxes and masks together.

    Args:
        samples: The annotated images.
        transforms: A ``torchvision.transforms.v2`` transform taking ``(image, target)``.
        load_size: ``(width, height) -> (width, height)``: the size an image is loaded at; ``None``: the
            file's own size.
        on_bad_data: ``"skip"``: an image that stops decoding during the run (it passed the check at
            start) is named once in the log and replaced by the next one; ``"error"``: raise naming it.
        cache_dir: Folder for loaded images (``uint8[3, H, W]`` ``.npy`` files keyed by the file's path,
            size, modification time and the load size); ``None``: decode every time.

    """

    def __init__(
        self,
        samples: list[Sample],
        transforms: Callable[..., Any] | None = None,
        load_size: LoadSize | None = None,
        on_bad_data: str = "error",
        cache_dir: Path | None = None,
    ) -> None:
        self.samples = samples
        self.transforms = transforms
        self.load_size = load_size
        self.on_bad_data = on_bad_data
        self.cache_dir = cache_dir
        self.skipped: set[Path] = set()
        self._targets: dict[int, tuple[list[torch.Tensor], torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def _size(self, sample: Sample) -> tuple[int, int]:
        return self.load_size(sample.width, sample.height) if self.load_size else (sample.width, sample.height)

    def _cached(self, sample: Sample, width: int, height: int) -> Path | None:
        if self.cache_dir is None:
            return None
        stat = sample.image.stat()
        key = f"{sample.image.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{width}x{height}"
        return self.cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def load_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as ``uint8[3, H, W]`` at its load size; raise naming a bad file."""
        sample = self.samples[index]
        width, height = self._size(sample)
        cached = self._cached(sample, width, height)
        if cached is not None and cached.is_file():
            try:
                return torch.from_numpy(np.load(cached))
            except (OSError, ValueError):  # a cache file cut short (disk full, killed writer): decode again
                pass
        decoded = read_rgb(sample.image, min_side=min(width, height))
        if decoded.size != (sample.width, sample.height):
            raise AnnotationError(
                f"{sample.image}: decoded as {decoded.size[0]}x{decoded.size[1]} but annotated as "
                f"{sample.width}x{sample.height}: the file changed after annotation; fix its annotations."
            )
        image = decoded.image
        if image.size != (width, height):
            image = image.resize((width, height), Image.Resampling.BILINEAR)
        pixels = np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))
        if cached is not None:
            _save_atomic(cached, pixels)
        return torch.from_numpy(pixels)

    def load_target(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Each instance's mask cropped to its box, and ``float32[N, 4]`` xyxy boxes, at the load size.

        Computed once, then kept: the crops are small, and pasting them into zeros costs a fraction of
        decoding whole masks every epoch.
        """
        if index not in self._targets:
            sample = self.samples[index]
            width, height = self._size(sample)
            rles = rles_at(sample, width, height)
            boxes = torch.zeros((len(rles), 4), dtype=torch.float32)
            crops = []
            if rles:
                x, y, w, h = torch.from_numpy(mask_utils.toBbox(rles)).float().unbind(1)
                boxes = torch.stack([x, y, x + w, y + h], dim=1)  # COCO's x2 = last column + 1
                masks = torch.from_numpy(mask_utils.decode(rles)).permute(2, 0, 1)
                corners = boxes.int().tolist()
                crops = [m[y0:y1, x0:x1].clone() for m, (x0, y0, x1, y1) in zip(masks, corners, strict=True)]
            self._targets[index] = (crops, boxes)
        return self._targets[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        for attempt in range(len(self.samples)):
            current = (index + attempt) % len(self.samples)
            try:
                return self._item(current)
            except (BadImageError, AnnotationError) as err:
                if self.on_bad_data != "skip":
                    raise
                if self.samples[current].image not in self.skipped:
                    self.skipped.add(self.samples[current].image)
                    log.warning("Skipping %s (data.on_bad_data: skip): %s", self.samples[current].image, err)
        raise BadImageError(f"none of the {len(self.samples)} images of this split decodes any more.")

    def _item(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = tv_tensors.Image(self.load_image(index))
        height, width = image.shape[-2:]
        crops, boxes = self.load_target(index)
        masks = torch.zeros((len(crops), height, width), dtype=torch.uint8)
        for mask, crop, (x0, y0, _, _) in zip(masks, crops, boxes.int().tolist(), strict=True):
            mask[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
        target = {
            "boxes": tv_tensors.BoundingBoxes(boxes.clone(), format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor([inst.label for inst in self.samples[index].instances], dtype=torch.int64),
            "masks": tv_tensors.Mask(masks),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` beside ``path`` and rename it into place (workers may race: both win)."""
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    except OSError as err:  # a full or read-only cache folder costs speed, never the run
        log.debug("Image cache: could not write %s (%s)", path, err)
        tmp.unlink(missing_ok=True)


def rles_at(sample: Sample, width: int, height: int) -> list[dict[str, Any]]:
    """One COCO RLE per instance at ``width`` x ``height``: pycocotools' rasterisation at that size.

    Polygons are scaled, then rasterised; an RLE is decoded at full size and resized (nearest). At the
    file's own size these are :meth:`Sample.rles`.
    """
    if (width, height) == (sample.width, sample.height):
        return sample.rles()
    sx, sy = width / sample.width, height / sample.height
    out = []
    for inst in sample.instances:
        seg = inst.segmentation
        if isinstance(seg, list):
            scaled = [[v * sy if i % 2 else v * sx for i, v in enumerate(poly)] for poly in seg]
            out.append(mask_utils.merge(mask_utils.frPyObjects(scaled, height, width)))
            continue
        rle = mask_utils.frPyObjects(seg, sample.height, sample.width) if isinstance(seg.get("counts"), list) else seg
        full = torch.from_numpy(mask_utils.decode(rle))[None, None].float()
        small = torch.nn.functional.interpolate(full, size=(height, width), mode="nearest-exact")
        out.append(mask_utils.encode(np.asfortranarray(small[0, 0].to(torch.uint8).numpy())))
    return out


def collate_detection(batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]]) -> tuple[list, list]:
    """Torchvision's detection collate: a list of images and a list of targets."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)
