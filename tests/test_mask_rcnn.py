"""MaskRCNNModule and its factory: architectures, losses, learning rates, precision, checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning
import lightning.pytorch as pl
import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from datamodules import FujiApplesDataModule
from lightning_modules import MaskRCNNModule
from lightning_modules.detection_models import (
    PARAMETER_GROUPS,
    DataSizedTransform,
    build_mask_rcnn,
    losses_and_detections,
    parameter_groups,
    without_weight_download,
)
from lightning_modules.schedules import WarmupCosineLR, build_scheduler

LOSSES = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
TINY = {
    "arch": "resnet18",
    "fpn_channels": 32,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "detector_options": {
        "rpn_post_nms_top_n_train": 100,
        "box_batch_size_per_image": 32,
        "box_detections_per_img": 10,
    },
}


def tiny_module(**overrides: object) -> MaskRCNNModule:
    torch.manual_seed(0)
    return MaskRCNNModule(**{**TINY, **overrides})


def tiny_data(root: Path) -> FujiApplesDataModule:
    return FujiApplesDataModule(root=root, min_size=72, max_size=96, batch_size=2, num_workers=0)


def trainer(**kwargs: object) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "fast_dev_run": 1,
    }
    return pl.Trainer(**{**options, **kwargs})


def a_batch(root: Path) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    data = tiny_data(root)
    data.setup("fit")
    images, targets = next(iter(data.val_dataloader()))
    assert sum(len(t["boxes"]) for t in targets) > 0
    return images, targets


# ---------------------------------------------------------------------- the factory
@pytest.mark.parametrize(
    "arch",
    ["maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "resnet18", "resnet34", "mobilenet_v3_large"],
)
def test_factory_builds_each_architecture_for_num_classes(arch: str) -> None:
    model = build_mask_rcnn(arch, num_classes=3, fpn_channels=64)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3
    assert isinstance(model.transform, DataSizedTransform)
    groups = parameter_groups(model, {"backbone": 0.1, "box_head": 2.0})
    assert [g["name"] for g in groups] == [g for g in PARAMETER_GROUPS if g != "rest"]
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(
        id(p) for p in model.parameters() if p.requires_grad
    )  # each exactly once
    assert {g["name"]: g["lr_mult"] for g in groups}["backbone"] == 0.1


def test_factory_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"one size per FPN level \(5 levels\)"):
        build_mask_rcnn("resnet18", anchor_sizes=[16, 32])
    with pytest.raises(
        ValueError, match="no COCO detector weights exist for arch=resnet18; use weights_backbone"
    ):
        build_mask_rcnn("resnet18", weights="DEFAULT")
    with pytest.raises(ValueError, match=r"unknown groups \['heads'\]"):
        parameter_groups(build_mask_rcnn("resnet18", fpn_channels=32), {"heads": 2.0})


def test_pretrained_layout_without_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with without_weight_download():
        v1 = build_mask_rcnn("maskrcnn_resnet50_fpn", num_classes=2, weights="DEFAULT")
        light = build_mask_rcnn("resnet18", num_classes=2, weights_backbone="DEFAULT", fpn_channels=32)
    assert isinstance(v1.backbone.body.layer1[0].bn1, FrozenBatchNorm2d) and isinstance(
        light.backbone.body.bn1, FrozenBatchNorm2d
    )
    assert v1.roi_heads.box_predictor.cls_score.out_features == 2 and not (tmp_path / "torch").exists()


# ---------------------------------------------------------------------- losses
def test_training_and_validation_losses(tiny_orchard: Path) -> None:
    module = tiny_module()
    images, targets = a_batch(tiny_orchard)
    module.train()
    assert set(module.model(images, targets)) == LOSSES

    module.eval()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in norms]
    with torch.no_grad():
        losses, detections = losses_and_detections(module.model, images, targets)
    assert set(losses) == LOSSES and all(torch.isfinite(v) for v in losses.values())
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, norms, strict=True))  # no BN update
    assert not module.model.training and not module.model.rpn.training and not module.model.roi_heads.training
    assert len(detections) == len(images) and detections[0]["masks"].shape[1:] == (1, *images[0].shape[1:])


def test_a_non_finite_loss_names_the_step_and_the_component(tiny_orchard: Path) -> None:
    module = tiny_module()
    module.model.roi_heads.box_predictor.bbox_pred.weight.data.fill_(float("nan"))  # a diverged layer
    with pytest.raises(
        FloatingPointError, match=r"Non-finite train loss at global step 0 .*loss_box_reg=nan"
    ) as info:
        trainer().fit(module, datamodule=tiny_data(tiny_orchard))
    assert "loss_mask" not in str(info.value) and "Lower the learning rate" in str(info.value)


# ---------------------------------------------------------------------- precision
def test_bf16_true_is_refused(tiny_orchard: Path) -> None:
    with pytest.raises(
        ValueError, match="precision=bf16-true is not supported by Mask R-CNN .*use bf16-mixed"
    ):
        trainer(precision="bf16-true").fit(tiny_module(), datamodule=tiny_data(tiny_orchard))


def test_bf16_mixed_trains_and_keeps_boxes_in_float32(tiny_orchard: Path) -> None:
    module = tiny_module()
    run = trainer(precision="bf16-mixed")
    run.fit(module, datamodule=tiny_data(tiny_orchard))
    assert torch.isfinite(run.callback_metrics["val/loss"])
    images, _ = a_batch(tiny_orchard)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        features = module.model.backbone(module.model.transform(images)[0].tensors)
        objectness, deltas = module.model.rpn.head(list(features.values()))
    assert features["0"].dtype == torch.bfloat16 and objectness[0].dtype == deltas[0].dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_mixed_on_cuda(tiny_orchard: Path) -> None:
    run = trainer(accelerator="gpu", devices=1, precision="bf16-mixed")
    run.fit(tiny_module(), datamodule=tiny_data(tiny_orchard))
    assert torch.isfinite(run.callback_metrics["val/loss"]) and "val_segm/mAP" in run.callback_metrics


# ---------------------------------------------------------------------- optimisation
def test_learning_rate_multipliers_and_warmup_cosine(tiny_orchard: Path) -> None:
    module = tiny_module(
        lr_multipliers={"backbone": 0.1, "mask_head": 2.0},
        optimizer=partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        scheduler=partial(WarmupCosineLR, warmup_steps=2, total_steps=None, warmup_factor=0.5),
    )
    run = trainer(fast_dev_run=False, max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    run.fit(module, datamodule=tiny_data(tiny_orchard))
    scheduler = run.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, WarmupCosineLR) and scheduler.total_steps == 3 and scheduler.last_epoch == 3
    initial = {g["name"]: g["initial_lr"] for g in run.optimizers[0].param_groups}
    assert initial == pytest.approx({"backbone": 0.01, "rpn": 0.1, "box_head": 0.1, "mask_head": 0.2})
    assert [scheduler.factor(s) for s in (0, 1, 2, 3)] == pytest.approx([0.5, 0.75, 1.0, 0.0])

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert (
        build_scheduler(
            partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1.0, total_steps=None), optimizer, 7
        ).total_steps
        == 7
    )
    assert build_scheduler(partial(torch.optim.lr_scheduler.StepLR, step_size=3), optimizer, 7).step_size == 3


# ---------------------------------------------------------------------- checkpoints and predictions
def test_load_from_checkpoint_weights_only_and_predict(tiny_orchard: Path, tmp_path: Path) -> None:
    module = tiny_module(class_names=["background", "apple"])
    run = trainer()
    run.fit(module, datamodule=tiny_data(tiny_orchard))
    path = tmp_path / "tiny.ckpt"
    run.save_checkpoint(path)
    loaded = MaskRCNNModule.load_from_checkpoint(path, weights_only=True, map_location="cpu").eval()
    assert loaded.class_names == ["background", "apple"] and loaded.hparams.arch == "resnet18"
    images, _ = a_batch(tiny_orchard)
    with torch.no_grad():
        expected, got = module.eval().predict_step(images), loaded.predict_step((images, []))
    for e, g in zip(expected, got, strict=True):
        assert set(g) == {"boxes", "labels", "scores", "masks"} and g["masks"].dtype == torch.bool
        assert (
            g["masks"].shape[0] == len(g["boxes"]) == len(g["scores"]) and g["boxes"].dtype == torch.float32
        )
        assert all(torch.equal(e[k], g[k]) for k in g)


def test_a_pretrained_recipe_checkpoint_loads_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with without_weight_download():
        module = tiny_module(weights_backbone="DEFAULT")
    path = tmp_path / "pretrained.ckpt"
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save({**checkpoint, "pytorch-lightning_version": lightning.__version__}, path)
    loaded = MaskRCNNModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.hparams.weights_backbone == "DEFAULT" and isinstance(
        loaded.model.backbone.body.bn1, FrozenBatchNorm2d
    )
    assert not (tmp_path / "torch").exists()
