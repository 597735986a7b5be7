"""COCOeval itself on a COCO ground truth and detections held in memory (``faster_coco_eval`` or ``pycocotools``).

As torchvision's detection references do: the ground truth is a COCO data set (crowd regions and
annotation areas included), the detections are COCO results, and the numbers are COCOeval's own.
Precision, recall and F1 at IoU 0.5 for detections scoring at least a threshold come from COCOeval's
per-image matching (:meth:`COCOeval.evaluateImg`), so crowd regions count there as in the mAP.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

Backend = Literal["faster_coco_eval", "pycocotools"]
IOU_TYPES = ("bbox", "segm")

#: COCOeval.stats index -> Harvest's name.
STAT_NAMES = {0: "mAP", 1: "mAP50", 2: "mAP75", 3: "mAP_small", 4: "mAP_medium", 5: "mAP_large", 8: "mAR100"}


def _classes(backend: Backend) -> tuple[type, type]:
    if backend == "pycocotools":
        return PyCOCO, PyCOCOeval
    from faster_coco_eval import COCO, COCOeval_faster

    return COCO, COCOeval_faster


def _ground_truth(coco_class: type, dataset: dict[str, Any]) -> Any:
    truth = coco_class()
    truth.dataset = {key: list(value) for key, value in dataset.items()}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
    return truth


def _results(truth: Any, coco_class: type, detections: list[dict[str, Any]], iou_type: str) -> Any:
    """COCO results of one IoU type: boxes alone for ``bbox``, masks alone for ``segm`` (as detectron2)."""
    key = "bbox" if iou_type == "bbox" else "segmentation"
    anns = [{k: d[k] for k in ("image_id", "category_id", "score", key)} for d in detections]
    if not anns:  # pycocotools' loadRes cannot load an empty list
        empty = coco_class()
        empty.dataset = {"images": list(truth.dataset["images"]), "categories": truth.dataset["categories"]}
        empty.dataset["annotations"] = []
        with contextlib.redirect_stdout(io.StringIO()):
            empty.createIndex()
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        return truth.loadRes(anns)


def _per_class_ap(precision: np.ndarray) -> list[float]:
    """AP at IoU 0.50:0.95 per category from COCOeval's ``precision[T, R, K, A, M]`` (all areas, 100 dets)."""
    out = []
    for k in range(precision.shape[2]):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        out.append(float(values.mean()) if values.size else -1.0)
    return out


def _matches_at_half(
    dataset: dict[str, Any], detections: list[dict[str, Any]], iou_type: str, score_threshold: float
) -> dict[int, np.ndarray]:
    """Per category id: ``[tp, fp, fn]`` at IoU 0.5 for detections scoring ``score_threshold`` or more."""
    truth = _ground_truth(PyCOCO, dataset)
    evaluation = PyCOCOeval(truth, _results(truth, PyCOCO, detections, iou_type), iou_type)
    evaluation.params.iouThrs = np.array([0.5])
    evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
    evaluation.params.maxDets = [max(100, len(detections))]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
    counts = {int(c): np.zeros(3, dtype=np.int64) for c in evaluation.params.catIds}
    for result in evaluation.evalImgs:
        if result is None:
            continue
        kept = np.asarray(result["dtScores"]) >= score_threshold
        matched = np.asarray(result["dtMatches"][0]) > 0
        ignored = np.asarray(result["dtIgnore"][0]).astype(bool)
        tp = int((kept & matched & ~ignored).sum())
        fp = int((kept & ~matched & ~ignored).sum())
        objects = int((~np.asarray(result["gtIgnore"]).astype(bool)).sum())
        counts[int(result["category_id"])] += (tp, fp, objects - tp)
    return counts


def precision_recall_f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    """``precision50``, ``recall50`` and ``F1_50`` from match counts (0 where undefined)."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision50": precision, "recall50": recall, "F1_50": f1}


def coco_metrics(
    dataset: dict[str, Any],
    detections: list[dict[str, Any]],
    backend: Backend = "faster_coco_eval",
    score_threshold: float = 0.5,
    iou_types: tuple[str, ...] = IOU_TYPES,
) -> dict[str, float]:
    """COCOeval's metrics of ``detections`` against the COCO ground truth ``dataset``.

    Args:
        dataset: A COCO data set: ``images``, ``annotations`` (with ``area``, ``bbox``, ``iscrowd``,
            ``segmentation`` as RLE or polygons, unique ``id``) and ``categories``.
        detections: COCO results with ``image_id``, ``category_id``, ``score``, ``bbox`` (xywh) and
            ``segmentation`` (RLE).
        backend: ``faster_coco_eval`` (fast, same numbers) or ``pycocotools`` (the reference).
        score_threshold: Score a detection needs to count in precision / recall / F1.
        iou_types: Which of ``bbox`` and ``segm`` to evaluate.

    Returns:
        ``<iou type>/<name>`` for the COCO summary (``mAP``, ``mAP50``, ``mAP75``, ``mAP_small``, ``mAP_medium``,
        ``mAP_large``, ``mAR100``; -1 where COCO has nothing to score), ``precision50``, ``recall50`` and
        ``F1_50`` over all classes, and ``<iou type>/<class id>/<name>`` per category (``mAP`` and the three
        above).

    """
    coco_class, eval_class = _classes(backend)
    truth = _ground_truth(coco_class, dataset)
    out: dict[str, float] = {}
    for iou_type in iou_types:
        evaluation = eval_class(truth, _results(truth, coco_class, detections, iou_type), iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = np.asarray(evaluation.stats, dtype=float)
        out.update({f"{iou_type}/{name}": float(stats[index]) for index, name in STAT_NAMES.items()})
        class_ids = [int(c) for c in evaluation.params.catIds]
        ap = _per_class_ap(np.asarray(evaluation.eval["precision"]))
        counts = _matches_at_half(dataset, detections, iou_type, score_threshold)
        total = sum(counts.values(), np.zeros(3, dtype=np.int64))
        out.update({f"{iou_type}/{k}": v for k, v in precision_recall_f1(*map(int, total)).items()})
        for class_id, class_ap in zip(class_ids, ap, strict=True):
            out[f"{iou_type}/{class_id}/mAP"] = class_ap
            scores = precision_recall_f1(*map(int, counts[class_id]))
            out.update({f"{iou_type}/{class_id}/{k}": v for k, v in scores.items()})
    return out
