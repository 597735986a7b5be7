"""The COCO ground truth that evaluation scores against, carried with each validation and test image.

A COCO file's annotations carry what training ignores but COCO's evaluation needs: crowd regions
(``iscrowd: 1``: regions that neither count as misses nor make the detections inside them false
positives, never training targets), the annotation's ``area`` (which decides the small / medium /
large ranges) and its ``bbox``. :class:`CocoSample` and :class:`CocoInstance` keep them beside the
training instances; :class:`EvaluationDataset` adds to every target an ``image_id`` and a ``coco`` dict
(the image and its annotations, at the image's original size, masks as COCO RLE), which
:class:`lightning_modules.detection_metrics.DetectionMetrics` turns back into a COCO ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from pycocotools import mask as mask_utils

from datamodules.instance_data import Instance, InstanceDataset, Sample, Segmentation


@dataclass(frozen=True)
class CocoInstance(Instance):
    """An instance with the ``area`` and ``bbox`` (``[x, y, w, h]``) of its COCO annotation, when given."""

    area: float | None = None
    bbox: tuple[float, float, float, float] | None = None


@dataclass
class CocoSample(Sample):
    """A sample from a COCO file: its image id there, and its crowd regions (evaluation only)."""

    image_id: int | None = None
    crowd: list[Instance] = field(default_factory=list)


def segmentation_rle(segmentation: Segmentation, height: int, width: int) -> dict[str, Any]:
    """One COCO RLE of a segmentation, exactly as ``COCO.annToRLE`` makes it (polygons merged)."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}


def _annotation(instance: Instance, height: int, width: int, crowd: bool) -> dict[str, Any]:
    rle = segmentation_rle(instance.segmentation, height, width)
    area = getattr(instance, "area", None)
    bbox = getattr(instance, "bbox", None)
    return {
        "category_id": int(instance.label),
        "segmentation": rle,
        "area": float(mask_utils.area(rle)) if area is None else float(area),
        "bbox": [float(v) for v in (mask_utils.toBbox(rle) if bbox is None else bbox)],
        "iscrowd": int(crowd),
    }


def image_ground_truth(sample: Sample, image_id: int) -> dict[str, Any]:
    """The COCO image entry of ``sample`` with its annotations (crowd regions included), at its file's size."""
    h, w = sample.height, sample.width
    annotations = [_annotation(inst, h, w, crowd=False) for inst in sample.instances]
    annotations += [_annotation(inst, h, w, crowd=True) for inst in getattr(sample, "crowd", [])]
    return {"id": int(image_id), "height": h, "width": w, "annotations": annotations}


def evaluation_image_id(sample: Sample, index: int) -> int:
    """The COCO file's image id of a COCO sample, else its position in the split plus one."""
    image_id = getattr(sample, "image_id", None)
    return int(image_id) if image_id is not None else index + 1


class EvaluationDataset(InstanceDataset):
    """An :class:`InstanceDataset` whose targets also carry ``image_id`` and the image's COCO ground truth."""

    def __getitem__(self, index: int) -> Any:
        item = super().__getitem__(index)
        if item is None:  # a sample left out by ``on_bad_data: skip``
            return item
        image, target = item
        image_id = evaluation_image_id(self.samples[index], index)
        target = dict(target)
        target["image_id"] = torch.tensor(image_id)
        target["coco"] = image_ground_truth(self.samples[index], image_id)
        return image, target
