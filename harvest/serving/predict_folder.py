"""``harvest registry predict NAME@ALIAS --images DIR``: a registered model on a folder of images.

Writes one JSON line per image (its ``path`` first, then what :mod:`harvest.serving.model` returns) to
``--output`` (default: standard output), line by line, so an unreadable image stops the run with
the lines before it kept. For a detector, ``--coco FILE`` also writes a COCO results file (compact
RLE masks, ``bbox`` as xywh) beside ``FILE`` with the suffix ``.images.json``, a COCO skeleton of the images and
categories, so ``COCO("out.images.json").loadRes("out.json")`` reads it (or use your own ground
truth with the same image ids: the images in sorted path order, from 1); ``--overlays DIR`` draws
the detections above ``--min-score`` on every image.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image

from datamodules.image_folder import list_images
from harvest.registry.api import Registry, RegistryError
from harvest.registry.cache import cached_package
from harvest.runs.directory import write_json_atomic
from harvest.serving.model import ServingModel

log = logging.getLogger(__name__)


@contextmanager
def _lines(output: Path | None) -> Iterator[IO[str]]:
    if output is None:
        yield sys.stdout
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w") as handle:
        yield handle


def coco_results(record: dict[str, Any], image_id: int) -> list[dict[str, Any]]:
    """A detector's record as COCO result annotations (``bbox`` xywh, RLE ``segmentation``)."""
    return [
        {
            "image_id": image_id,
            "category_id": label,
            "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": score,
            "segmentation": mask,
        }
        for (x1, y1, x2, y2), score, label, mask in zip(
            record["boxes"], record["scores"], record["labels"], record["masks"], strict=True
        )
    ]


def draw_overlay(path: Path, record: dict[str, Any], min_score: float, dst: Path) -> None:
    """Save ``path`` with the masks and boxes of the detections scoring at least ``min_score``."""
    from pycocotools import mask as coco_mask
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    keep = [i for i, s in enumerate(record["scores"]) if s >= min_score]
    if keep:
        masks = torch.from_numpy(coco_mask.decode([record["masks"][i] for i in keep])).permute(2, 0, 1).bool()
        image = draw_segmentation_masks(image, masks, alpha=0.45, colors="red")
        boxes = torch.tensor([record["boxes"][i] for i in keep])
        labels = [f"{record['class_names'][i]} {record['scores'][i]:.2f}" for i in keep]
        image = draw_bounding_boxes(image, boxes, labels, colors="yellow", width=2)
    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(dst)


def predict_folder(
    registry: Registry,
    ref: str,
    images: Path,
    output: Path | None = None,
    coco: Path | None = None,
    overlays: Path | None = None,
    min_score: float = 0.5,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Predict every image under ``images`` (recursively, sorted) with the registered ``ref``.

    Returns:
        A summary: the version, the number of images and the files written.

    Raises:
        RegistryError: No such model, or no images in the folder.
        harvest.serving.model.InputError: An image that cannot be read (the lines before it are kept).

    """
    files = list_images(images, recursive=True)
    if not files:
        raise RegistryError(f"--images {images}: no .jpg/.jpeg/.png files there (searched recursively).")
    info, package, _ = cached_package(registry, ref)
    model = ServingModel.from_package(package, info.record, f"{ref} ({info.label})")
    if (coco or overlays) and not model.detector:
        raise RegistryError(f"{ref} is a classifier: --coco and --overlays are for detectors; leave them out.")
    results: list[dict[str, Any]] = []
    with _lines(output) as sink:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            for offset, record in enumerate(model.predict(chunk, [str(p) for p in chunk], batch_size)):
                sink.write(json.dumps(record) + "\n")
                if coco:
                    results += coco_results(record, start + offset + 1)
                if overlays:
                    draw_overlay(chunk[offset], record, min_score, overlays / f"{chunk[offset].stem}.png")
            sink.flush()
    written = [str(output)] if output else []
    if coco:
        sizes = [Image.open(p).size for p in files]  # the header only
        skeleton = {
            "images": [
                {"id": i + 1, "file_name": str(p), "width": w, "height": h}
                for i, (p, (w, h)) in enumerate(zip(files, sizes, strict=True))
            ],
            "categories": [{"id": i, "name": n} for i, n in enumerate(model.class_names) if i > 0],
            "annotations": [],
        }
        write_json_atomic(coco.with_suffix(".images.json"), skeleton)
        write_json_atomic(coco, results)
        written += [str(coco), str(coco.with_suffix(".images.json"))]
    if overlays:
        written.append(str(overlays))
    return {"version": info.label, "images": len(files), "written": written}
