"""Detection metrics of one stage: COCOeval's mAP (bbox and segm) and precision / recall / F1 at IoU 0.5.

Detections are accumulated as COCO results and scored by COCOeval itself against a COCO ground truth
built from the data set's annotations (:mod:`datamodules.coco_truth`: crowd regions, annotation areas,
the image's original size); detections on a resized image are mapped back to the original pixels
first (boxes scaled, mask probabilities resized, then thresholded), as torchvision's references do.
Targets without that ground truth (any torchvision-style data set) are scored against their own
boxes, labels and masks. Across processes the images and detections are gathered before scoring,
each image once (a distributed sampler repeats some to even out the ranks).

Names are ``<iou type>/<metric>`` (``bbox/mAP``, ``segm/mAP50``, ``segm/F1_50``…) and, with two classes
or more, per class ``<iou type>/<class>/<metric>``, so a stage prefix gives ``val_segm/mAP`` and
``val_segm/apple/F1_50``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import Tensor

from lightning_modules.coco_evaluation import Backend, coco_metrics

#: Mask probabilities are resized to the original image in chunks of at most this many pixels.
_RESIZE_CHUNK_PIXELS = 1 << 26


def encode_masks(masks: Tensor) -> list[dict[str, Any]]:
    """COCO RLEs of boolean masks ``[N, H, W]``."""
    if not len(masks):
        return []
    array = np.asfortranarray(masks.to("cpu", torch.uint8).permute(1, 2, 0).numpy())
    return mask_utils.encode(array)


def _original_masks(probabilities: Tensor, size: tuple[int, int], threshold: float) -> Tensor:
    """Mask probabilities ``[N, 1, h, w]`` resized to ``size`` (bilinear), then thresholded, as ``[N, H, W]``."""
    if tuple(probabilities.shape[-2:]) == size:
        return probabilities[:, 0] > threshold
    chunk = max(1, _RESIZE_CHUNK_PIXELS // (size[0] * size[1]))
    parts = [
        F.interpolate(probabilities[i : i + chunk].float(), size=size, mode="bilinear", align_corners=False)[:, 0]
        > threshold
        for i in range(0, len(probabilities), chunk)
    ]
    return torch.cat(parts)


def _truth_from_target(target: dict[str, Tensor], image_id: int) -> dict[str, Any]:
    """A COCO image with its annotations from a plain torchvision target (no crowd, mask areas)."""
    masks = target["masks"].bool()
    height, width = (int(v) for v in masks.shape[-2:])
    rles = encode_masks(masks)
    boxes = target["boxes"].float().cpu()
    annotations = [
        {
            "category_id": int(label),
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
            "iscrowd": 0,
        }
        for rle, box, label in zip(rles, boxes, target["labels"].tolist(), strict=True)
    ]
    return {"id": image_id, "height": height, "width": width, "annotations": annotations}


class DetectionMetrics:
    """COCOeval's mAP for boxes and masks, and precision / recall / F1 at IoU 0.5, for one stage.

    Args:
        backend: COCO evaluation: ``faster_coco_eval`` (fast) or ``pycocotools`` (the reference); the
            numbers are the same.
        score_threshold: Score a detection needs to count in precision / recall / F1 (mAP uses all).
        mask_threshold: Mask probability above which a pixel belongs to a detection.
        class_names: Class names, index 0 = background, for the per-class names (default: the class index).

    """

    def __init__(
        self,
        backend: Backend = "faster_coco_eval",
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        class_names: list[str] | None = None,
    ) -> None:
        self.backend, self.score_threshold, self.mask_threshold = backend, score_threshold, mask_threshold
        self.class_names = list(class_names or [])
        self.reset()

    def reset(self) -> None:
        """Forget all updates."""
        self.images: dict[int, dict[str, Any]] = {}
        self.detections: dict[int, list[dict[str, Any]]] = {}
        self._unnamed = 0  # images without a COCO ground truth of their own, numbered as they come

    def _next_unnamed_id(self) -> int:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self._unnamed += 1
        return -(rank * 10**9 + self._unnamed)  # negative: never a COCO file's id

    def update(self, detections: list[dict[str, Tensor]], targets: list[dict[str, Any]]) -> None:
        """Add one batch: the detector's outputs (mask probabilities ``[N, 1, h, w]``) and the targets."""
        for detection, target in zip(detections, targets, strict=True):
            truth = target.get("coco") or _truth_from_target(target, self._next_unnamed_id())
            image_id, size = truth["id"], (truth["height"], truth["width"])
            probabilities = detection["masks"]
            scale_y, scale_x = size[0] / probabilities.shape[-2], size[1] / probabilities.shape[-1]
            boxes = detection["boxes"].float().cpu() * torch.tensor([scale_x, scale_y, scale_x, scale_y])
            rles = encode_masks(_original_masks(probabilities, size, self.mask_threshold))
            self.images[image_id] = truth
            self.detections[image_id] = [
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "score": float(score),
                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])],
                    "segmentation": rle,
                }
                for box, label, score, rle in zip(
                    boxes, detection["labels"].tolist(), detection["scores"].float().tolist(), rles, strict=True
                )
            ]

    def _gathered(self) -> tuple[dict[int, dict[str, Any]], dict[int, list[dict[str, Any]]]]:
        """Images and detections of every process (each image once)."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.images, self.detections
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self.images, self.detections))
        images: dict[int, dict[str, Any]] = {}
        detections: dict[int, list[dict[str, Any]]] = {}
        for part_images, part_detections in parts:
            images.update(part_images)
            detections.update(part_detections)
        return images, detections

    def ground_truth(self, images: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """The COCO data set of the evaluated images: annotations numbered, every class a category."""
        annotations = []
        for image_id in sorted(images):
            for ann in images[image_id]["annotations"]:
                annotations.append({**ann, "image_id": image_id, "id": len(annotations) + 1})
        labels = {a["category_id"] for a in annotations} | set(range(1, len(self.class_names)))
        return {
            "images": [{k: images[i][k] for k in ("id", "height", "width")} for i in sorted(images)],
            "annotations": annotations,
            "categories": [{"id": label, "name": self._name(label)} for label in sorted(labels)],
        }

    def _name(self, label: int) -> str:
        name = self.class_names[label] if 0 < label < len(self.class_names) else str(label)
        return name.replace("/", "_")

    def compute(self) -> dict[str, Tensor]:
        """Every metric by ``<iou type>/<name>``, and per class by ``<iou type>/<class>/<name>``."""
        images, detections = self._gathered()
        dataset = self.ground_truth(images)
        results = [d for image_id in sorted(detections) for d in detections[image_id]]
        metrics = coco_metrics(dataset, results, self.backend, self.score_threshold)
        per_class = len(dataset["categories"]) > 1  # with one class, its row would repeat the total
        out = {}
        for key, value in metrics.items():
            iou_type, *middle, name = key.split("/")
            if middle and not per_class:
                continue
            named = [self._name(int(m)) for m in middle]
            out["/".join([iou_type, *named, name])] = torch.tensor(value, dtype=torch.float32)
        return out
