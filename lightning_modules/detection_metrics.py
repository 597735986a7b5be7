"""Detection metrics: COCO mAP (bbox and segm) through torchmetrics, and precision / recall / F1 at IoU 0.5.

Names are ``<iou type>/<metric>`` (``bbox/mAP``, ``segm/mAP50``, ``segm/F1_50``…), so a stage prefix gives
``val_segm/mAP`` and a results table has one row per IoU type.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

IouType = Literal["bbox", "segm"]

#: torchmetrics' key (after the ``bbox_`` / ``segm_`` prefix) -> Harvest's column name.
COCO_NAMES = {
    "map": "mAP",
    "map_50": "mAP50",
    "map_75": "mAP75",
    "map_small": "mAP_small",
    "map_medium": "mAP_medium",
    "map_large": "mAP_large",
    "mar_100": "mAR100",
}


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every pair of boolean masks ``a[N, H, W]`` and ``b[M, H, W]``, as ``[N, M]``."""
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return inter / union.clamp(min=1)


class DetectionF1(Metric):
    """Precision, recall and F1 of detections scoring ``score_threshold`` or more, matched at an IoU.

    Detections are matched greedily by decreasing score to the unmatched ground truth of the same class
    with the highest IoU, as in COCO; unmatched detections are false positives, unmatched objects false
    negatives, summed over images.

    Args:
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU).
        iou_threshold: IoU needed for a match.
        score_threshold: Detections scoring less are ignored.

    """

    full_state_update = False

    def __init__(
        self, iou_type: IouType = "bbox", iou_threshold: float = 0.5, score_threshold: float = 0.5
    ) -> None:
        super().__init__()
        self.iou_type, self.iou_threshold, self.score_threshold = iou_type, iou_threshold, score_threshold
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Count matches of one batch (``masks`` boolean ``[N, H, W]`` when ``iou_type`` is ``segm``)."""
        for pred, target in zip(preds, targets, strict=True):
            keep = pred["scores"] >= self.score_threshold
            order = pred["scores"][keep].argsort(descending=True)
            labels, gt_labels = pred["labels"][keep][order], target["labels"]
            if self.iou_type == "bbox":
                iou = box_iou(pred["boxes"][keep][order], target["boxes"])
            else:
                iou = mask_iou(pred["masks"][keep][order], target["masks"])
            iou = torch.where(labels[:, None] == gt_labels[None, :], iou, torch.zeros_like(iou))
            matched = torch.zeros(len(gt_labels), dtype=torch.bool, device=iou.device)
            tp = 0
            for row in iou:
                candidates = torch.where(matched, torch.full_like(row, -1.0), row)
                if len(candidates) and candidates.max() >= self.iou_threshold:
                    matched[candidates.argmax()] = True
                    tp += 1
            self.tp += tp
            self.fp += len(labels) - tp
            self.fn += len(gt_labels) - tp

    def compute(self) -> dict[str, Tensor]:
        """Return ``precision50``, ``recall50`` and ``F1_50`` (so named whatever ``iou_threshold`` is)."""
        tp, fp, fn = self.tp.float(), self.fp.float(), self.fn.float()
        precision = tp / (tp + fp).clamp(min=1)
        recall = tp / (tp + fn).clamp(min=1)
        f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        return {"precision50": precision, "recall50": recall, "F1_50": f1}


class DetectionMetrics(nn.Module):
    """COCO mAP for boxes and masks plus :class:`DetectionF1` for both, for one stage (validation or test).

    Args:
        backend: COCO evaluation backend of torchmetrics: ``faster_coco_eval`` or ``pycocotools``.
        score_threshold: Score a detection needs to count in precision / recall / F1 (mAP uses all).
        mask_threshold: Mask probability above which a pixel belongs to a detection.

    """

    def __init__(
        self,
        backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.mask_threshold = mask_threshold
        self.coco = MeanAveragePrecision(iou_type=("bbox", "segm"), backend=backend)
        self.f1 = nn.ModuleDict({t: DetectionF1(t, 0.5, score_threshold) for t in ("bbox", "segm")})

    def update(self, detections: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> None:
        """Add one batch: the detector's outputs (mask probabilities ``[N, 1, H, W]``) and the targets."""
        preds = [
            {
                "boxes": d["boxes"].float(),
                "scores": d["scores"].float(),
                "labels": d["labels"],
                "masks": d["masks"][:, 0] > self.mask_threshold,
            }
            for d in detections
        ]
        truth = [{"boxes": t["boxes"], "labels": t["labels"], "masks": t["masks"].bool()} for t in targets]
        self.coco.update(preds, truth)
        for metric in self.f1.values():
            metric.update(preds, truth)

    def compute(self) -> dict[str, Tensor]:
        """Every metric by ``<iou type>/<name>``."""
        coco = self.coco.compute()
        out = {
            f"{t}/{name}": coco[f"{t}_{key}"] for t in ("bbox", "segm") for key, name in COCO_NAMES.items()
        }
        for iou_type, metric in self.f1.items():
            out.update({f"{iou_type}/{name}": value for name, value in metric.compute().items()})
        return out

    def reset(self) -> None:
        """Forget all updates."""
        self.coco.reset()
        for metric in self.f1.values():
            metric.reset()
