"""MaskRCNNModule: torchvision Mask R-CNN trained and evaluated as a LightningModule.

Logged: each loss component and the total (``train/loss_mask``…, ``val/loss_mask``… — validation
computes the losses too), COCOeval's mAP for boxes and masks and precision / recall / F1 at IoU 0.5
(``val_bbox/mAP``, ``val_segm/mAP50``, ``val_segm/F1_50``…; per class ``val_segm/<class>/F1_50``… with two
classes or more; ``test_…`` when testing), scored against the data set's COCO ground truth.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_modules.detection_metrics import DetectionMetrics
from lightning_modules.detection_models import (
    Architecture,
    build_mask_rcnn,
    losses_and_detections,
    parameter_groups,
    without_weight_download,
)
from lightning_modules.schedules import build_scheduler

Batch = tuple[list[Tensor], list[dict[str, Tensor]]]
_REFUSED_PRECISIONS = ("bf16-true", "16-true")


class MaskRCNNModule(pl.LightningModule):
    """Instance segmentation with torchvision's Mask R-CNN.

    Args:
        num_classes: Classes including background (linked from the data module).
        class_names: Class names, index 0 = background (linked from the data module).
        arch: Detector: ``maskrcnn_resnet50_fpn_v2``, ``maskrcnn_resnet50_fpn``, or a lighter FPN backbone
            for CPU runs (``resnet18``, ``resnet34``, ``mobilenet_v3_large``).
        weights: COCO weights of the whole detector (``"DEFAULT"``), ResNet-50 models only; none by default.
        weights_backbone: ImageNet weights of the backbone (``"DEFAULT"``); none by default.
        trainable_backbone_layers: Backbone stages trained when starting from weights (torchvision's default).
        anchor_sizes: Anchor size per FPN level; torchvision's ``[32, 64, 128, 256, 512]`` when unset.
        fpn_channels: Width of the FPN and heads of the lighter backbones (256 = torchvision's).
        detector_options: Further keyword arguments of torchvision's ``MaskRCNN``
            (``box_batch_size_per_image``, ``rpn_post_nms_top_n_train``, ``box_detections_per_img``…).
        lr_multipliers: Learning-rate multiplier per parameter group: ``backbone``, ``rpn``, ``box_head``,
            ``mask_head``, ``rest`` (1.0 where missing).
        optimizer: Optimizer factory (from the config).
        scheduler: Learning-rate scheduler factory, stepped every optimizer step; one taking ``total_steps``
            (``WarmupCosineLR``, ``OneCycleLR``) gets the run's length when the config leaves it unset.
        map_backend: COCOeval used for every metric: ``faster_coco_eval`` (fast) or ``pycocotools``.
        score_threshold: Score a detection needs to count in precision / recall / F1.
        mask_threshold: Mask probability above which a pixel belongs to an instance.

    """

    def __init__(
        self,
        num_classes: int = 2,
        class_names: list[str] | None = None,
        arch: Architecture = "maskrcnn_resnet50_fpn_v2",
        weights: str | None = None,
        weights_backbone: str | None = None,
        trainable_backbone_layers: int | None = None,
        anchor_sizes: list[int] | None = None,
        fpn_channels: int = 256,
        detector_options: dict[str, Any] | None = None,
        lr_multipliers: dict[str, float] | None = None,
        optimizer: OptimizerCallable = torch.optim.SGD,
        scheduler: LRSchedulerCallable | None = None,
        map_backend: Literal["faster_coco_eval", "pycocotools"] = "faster_coco_eval",
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)  # trackers get the config once
        self.class_names = class_names or ["background"] + [f"class_{i}" for i in range(1, num_classes)]
        self.model = build_mask_rcnn(
            arch, num_classes, weights, weights_backbone, trainable_backbone_layers, anchor_sizes,
            fpn_channels, **(detector_options or {}),
        )  # fmt: skip
        self.lr_multipliers = lr_multipliers or {}
        self.optimizer, self.scheduler = optimizer, scheduler
        self.mask_threshold = mask_threshold
        self.val_metrics = DetectionMetrics(map_backend, score_threshold, mask_threshold, self.class_names)
        self.test_metrics = DetectionMetrics(map_backend, score_threshold, mask_threshold, self.class_names)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> MaskRCNNModule:  # type: ignore[override]
        """Load a checkpoint, without fetching the pretrained weights that its own weights replace."""
        with without_weight_download():
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def setup(self, stage: str) -> None:
        """Refuse half-precision weights, which torchvision's detection ops do not support."""
        precision = str(self.trainer.precision)
        if precision in _REFUSED_PRECISIONS:
            raise ValueError(
                f"trainer.precision={precision} is not supported by Mask R-CNN (torchvision's roi_align, "
                "nms and box coding need float32 weights and boxes): use bf16-mixed (or 16-mixed) instead."
            )

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Run the detector in its current mode (eval: boxes, labels, scores, mask probabilities)."""
        return self.model(images)

    def _log_losses(self, losses: dict[str, Tensor], stage: str, batch_idx: int, batch_size: int) -> Tensor:
        total = torch.stack(list(losses.values())).sum()
        if not torch.isfinite(total):
            bad = ", ".join(
                f"{name}={value.item()}" for name, value in losses.items() if not torch.isfinite(value)
            )
            raise FloatingPointError(
                f"Non-finite {stage} loss at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}): {bad}. Lower the learning rate, lengthen the warm-up or check this "
                "batch's annotations."
            )
        train = stage == "train"
        metrics = {f"{stage}/{name}": value for name, value in losses.items()} | {f"{stage}/loss": total}
        self.log_dict(metrics, on_step=train, on_epoch=True, batch_size=batch_size, sync_dist=not train)
        return total

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """Return the summed loss of one batch, logging each component."""
        images, targets = batch
        return self._log_losses(self.model(images, targets), "train", batch_idx, len(images))

    def _evaluation_step(
        self, batch: Batch, batch_idx: int, stage: str, metrics: DetectionMetrics
    ) -> list[dict]:
        images, targets = batch
        losses, detections = losses_and_detections(self.model, images, targets)
        self._log_losses(losses, stage, batch_idx, len(images))
        metrics.update(detections, targets)
        return detections

    def _log_metrics(self, stage: str, metrics: DetectionMetrics) -> None:
        self.log_dict({f"{stage}_{name}": value for name, value in metrics.compute().items()})
        metrics.reset()

    def validation_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        """Log the losses, update the metrics and return the detections (for callbacks that draw them)."""
        return self._evaluation_step(batch, batch_idx, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        """Log COCO mAP and precision / recall / F1 of the epoch."""
        self._log_metrics("val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        """Like :meth:`validation_step`, on the test split."""
        return self._evaluation_step(batch, batch_idx, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        """Log the test split's COCO mAP and precision / recall / F1."""
        self._log_metrics("test", self.test_metrics)

    def predict_step(self, batch: Batch | list[Tensor], batch_idx: int = 0) -> list[dict[str, Tensor]]:
        """Per image: ``boxes`` (xyxy), ``labels``, ``scores`` and boolean ``masks[N, H, W]``, on the CPU."""
        images = batch[0] if isinstance(batch, tuple) else batch
        return [
            {
                "boxes": d["boxes"].float().cpu(),
                "labels": d["labels"].cpu(),
                "scores": d["scores"].float().cpu(),
                "masks": (d["masks"][:, 0] > self.mask_threshold).cpu(),
            }
            for d in self.model(images)
        ]

    def configure_optimizers(self) -> Any:
        """Build the configured optimizer over the parameter groups, and the scheduler stepped per step."""
        optimizer = self.optimizer(parameter_groups(self.model, self.lr_multipliers))
        for group in optimizer.param_groups:
            group["lr"] *= group["lr_mult"]
        if self.scheduler is None:
            return optimizer
        scheduler = build_scheduler(self.scheduler, optimizer, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
