"""The mAP Harvest logs equals pycocotools' own COCOeval on the same ground truth and predictions.

A tiny hand-built COCO ground truth (three 200x150 images: a small, a medium and a large apple, an
RLE apple, a negative image) and fixed predictions (good, shifted, duplicate, false positive,
missed) are scored twice: by pycocotools' COCOeval fed with COCO files, and by
:class:`DetectionMetrics` fed with tensors as the LightningModule feeds it, with both backends.
COCO files store polygon areas; torchmetrics takes the area of the rasterised mask, so the ground
truth here records that area (the only way two evaluations of the same masks can agree exactly).
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lightning_modules.detection_metrics import DetectionF1, DetectionMetrics

H, W = 150, 200
STATS = ["mAP", "mAP50", "mAP75", "mAP_small", "mAP_medium", "mAP_large"]  # COCOeval.stats[0:6]


def box_mask(x: int, y: int, w: int, h: int, round_: bool = False) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8, order="F")
    if round_:
        yy, xx = np.mgrid[:H, :W]
        mask[((xx - x - w / 2) / (w / 2)) ** 2 + ((yy - y - h / 2) / (h / 2)) ** 2 <= 1] = 1
    else:
        mask[y : y + h, x : x + w] = 1
    return mask


#: image id -> ground-truth masks
TRUTH = {
    1: [box_mask(10, 10, 20, 18, round_=True), box_mask(60, 40, 50, 45)],  # small, medium
    2: [box_mask(40, 20, 120, 110, round_=True), box_mask(5, 100, 30, 30)],  # large, small
    3: [],  # a negative image
}
#: image id -> (mask, score) predictions
PREDICTIONS = {
    1: [
        (box_mask(11, 10, 20, 18, round_=True), 0.95),
        (box_mask(66, 44, 50, 45), 0.80),
        (box_mask(62, 41, 48, 44), 0.40),
    ],
    2: [
        (box_mask(45, 28, 112, 100, round_=True), 0.90),
        (box_mask(150, 10, 20, 20), 0.60),
    ],  # the small apple is missed
    3: [(box_mask(100, 60, 40, 40), 0.70), (box_mask(10, 10, 15, 15), 0.20)],
}


def rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask))


def pycocotools_stats(iou_type: str) -> list[float]:
    annotations = []
    for image_id, masks in TRUTH.items():
        for mask in masks:
            encoded = rle(mask)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": encoded,
                    "area": float(mask_utils.area(encoded)),
                    "bbox": mask_utils.toBbox(encoded).tolist(),
                }
            )
    truth = COCO()
    truth.dataset = {
        "images": [{"id": i, "height": H, "width": W} for i in TRUTH],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "apple"}],
    }
    results = []
    for image_id, predictions in PREDICTIONS.items():
        for mask, score in predictions:
            encoded = rle(mask)
            entry = {"image_id": image_id, "category_id": 1, "score": score}
            entry.update(
                {"segmentation": encoded}
                if iou_type == "segm"
                else {"bbox": mask_utils.toBbox(encoded).tolist()}
            )
            results.append(entry)
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluation = COCOeval(truth, truth.loadRes(results), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(v) for v in evaluation.stats]


def xyxy(mask: np.ndarray) -> list[float]:
    x, y, w, h = mask_utils.toBbox(rle(mask)).tolist()
    return [x, y, x + w, y + h]


def harvest_inputs() -> tuple[list[dict], list[dict]]:
    """What MaskRCNNModule hands its metrics: detector outputs (mask probabilities) and targets."""
    detections, targets = [], []
    for image_id in TRUTH:
        masks = [m for m, _ in PREDICTIONS[image_id]]
        detections.append(
            {
                "boxes": torch.tensor([xyxy(m) for m in masks], dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor([s for _, s in PREDICTIONS[image_id]]),
                "labels": torch.ones(len(masks), dtype=torch.int64),
                "masks": torch.from_numpy(np.stack(masks).astype(np.float32))[:, None] * 0.9,
            }
        )
        truth = TRUTH[image_id]
        targets.append(
            {
                "boxes": torch.tensor([xyxy(m) for m in truth], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.ones(len(truth), dtype=torch.int64),
                "masks": torch.from_numpy(np.stack(truth) if truth else np.zeros((0, H, W), dtype=np.uint8)),
            }
        )
    return detections, targets


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_map_equals_pycocotools_cocoeval(backend: str) -> None:
    metrics = DetectionMetrics(backend=backend)
    detections, targets = harvest_inputs()
    metrics.update(detections[:2], targets[:2])  # two batches, as validation sends them
    metrics.update(detections[2:], targets[2:])
    ours = metrics.compute()
    for iou_type in ("bbox", "segm"):
        reference = pycocotools_stats(iou_type)
        got = [float(ours[f"{iou_type}/{name}"]) for name in STATS] + [float(ours[f"{iou_type}/mAR100"])]
        assert got == pytest.approx(reference[:6] + [reference[8]], abs=1e-6), iou_type
        assert 0 < reference[0] < reference[1] < 1 and all(
            v > 0 for v in reference[3:6]
        )  # every size range scored
    assert ours["bbox/mAP"] != ours["segm/mAP"]


def test_precision_recall_f1_at_iou_half() -> None:
    detections, targets = harvest_inputs()
    preds = [{**d, "masks": d["masks"][:, 0] > 0.5} for d in detections]
    truth = [{**t, "masks": t["masks"].bool()} for t in targets]
    for iou_type in ("bbox", "segm"):
        metric = DetectionF1(iou_type, iou_threshold=0.5, score_threshold=0.5)
        metric.update(preds, truth)
        # scoring >= 0.5: image 1 two hits; image 2 the large apple hit, one false positive, the small one
        # missed; image 3 one false positive -> TP 3, FP 2, FN 1
        assert (int(metric.tp), int(metric.fp), int(metric.fn)) == (3, 2, 1), iou_type
        result = metric.compute()
        assert float(result["precision50"]) == pytest.approx(3 / 5) and float(
            result["recall50"]
        ) == pytest.approx(3 / 4)
        assert float(result["F1_50"]) == pytest.approx(2 * 0.6 * 0.75 / 1.35)
