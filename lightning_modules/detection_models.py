"""Torchvision Mask R-CNN models, built by name: the factory behind :class:`MaskRCNNModule`.

Images reach the detector already sized by the data module (``min_size`` / ``max_size``), so the
detector's own transform only normalises and batches them: the image size is declared once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

import torch
from torch import nn
from torchvision.models import get_model_weights
from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import misc as misc_nn_ops
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

from lightning_modules.weights import fetching_weights

Architecture = Literal[
    "maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn", "resnet18", "resnet34", "mobilenet_v3_large"
]

#: Parameter groups of :func:`parameter_groups`, each with its own learning-rate multiplier.
PARAMETER_GROUPS = ("backbone", "rpn", "box_head", "mask_head", "rest")

_ASPECT_RATIOS = (0.5, 1.0, 2.0)
_FETCH_WEIGHTS: ContextVar[bool] = ContextVar("harvest_fetch_weights", default=True)
_LIGHT_BACKBONES = ("resnet18", "resnet34", "mobilenet_v3_large")


class DataSizedTransform(GeneralizedRCNNTransform):
    """Torchvision's detection transform without the resize: normalise and batch images as they come."""

    def __init__(self, image_mean: list[float], image_std: list[float], size_divisible: int = 32) -> None:
        super().__init__(
            min_size=1, max_size=1, image_mean=image_mean, image_std=image_std, size_divisible=size_divisible
        )

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Return the image and target unchanged: the data module sized them."""
        return image, target


def _weights(model_name: str, value: str | None):  # noqa: ANN202 - a torchvision WeightsEnum member
    return None if value is None else get_model_weights(model_name).verify(value)


def _anchor_generator(sizes: list[int], levels: int, per_level: bool) -> AnchorGenerator:
    if per_level and len(sizes) != levels:
        raise ValueError(
            f"anchor_sizes={sizes} must give one size per FPN level ({levels} levels), e.g. [32, 64, 128, 256, 512]."
        )
    per_level_sizes = tuple((s,) for s in sizes) if per_level else (tuple(sizes),) * levels
    return AnchorGenerator(per_level_sizes, (_ASPECT_RATIOS,) * levels)


def build_mask_rcnn(
    arch: Architecture = "maskrcnn_resnet50_fpn_v2",
    num_classes: int = 2,
    weights: str | None = None,
    weights_backbone: str | None = None,
    trainable_backbone_layers: int | None = None,
    anchor_sizes: list[int] | None = None,
    fpn_channels: int = 256,
    **detector_options: object,
) -> MaskRCNN:
    """Build a torchvision Mask R-CNN with box and mask predictors for ``num_classes`` (background included).

    Args:
        arch: ``maskrcnn_resnet50_fpn_v2`` / ``maskrcnn_resnet50_fpn`` (torchvision's models), or a lighter
            FPN backbone for CPU runs: ``resnet18``, ``resnet34``, ``mobilenet_v3_large``.
        num_classes: Number of classes including background (index 0).
        weights: Weights of the whole detector (``"DEFAULT"`` = COCO), only for the two ResNet-50 models.
        weights_backbone: ImageNet weights of the backbone (``"DEFAULT"``); ignored when ``weights`` is set.
        trainable_backbone_layers: Backbone stages trained (0-5 ResNets, 0-6 MobileNet); all without weights.
        anchor_sizes: Anchor size of each FPN level (five for ResNets), or the sizes used on every level
            of ``mobilenet_v3_large``; torchvision's defaults when unset.
        fpn_channels: Channels of the FPN and of the box and mask heads of the lighter backbones
            (256 as in torchvision; 64 trains about twice as fast on a CPU).
        **detector_options: Keyword arguments of torchvision's ``MaskRCNN`` (``box_batch_size_per_image``,
            ``rpn_pre_nms_top_n_train``, ``box_detections_per_img``...).

    """
    fetch = _FETCH_WEIGHTS.get()
    if arch in ("maskrcnn_resnet50_fpn_v2", "maskrcnn_resnet50_fpn"):
        builder = maskrcnn_resnet50_fpn_v2 if arch.endswith("_v2") else maskrcnn_resnet50_fpn
        if fetch or not (weights or weights_backbone):
            fetched = (arch, weights, "weights") if weights else ("resnet50", weights_backbone, "weights_backbone")
            with fetching_weights(fetched[0], fetched[1], f"model.init_args.{fetched[2]}"):
                model = builder(
                    weights=weights,
                    weights_backbone=weights_backbone,
                    num_classes=None if weights else num_classes,
                    trainable_backbone_layers=trainable_backbone_layers,
                    **detector_options,
                )
        else:  # the pretrained layout, its weights about to come from a checkpoint
            model = builder(weights=None, weights_backbone=None, num_classes=num_classes, **detector_options)
            if builder is maskrcnn_resnet50_fpn:
                _freeze_batch_norms(model.backbone.body)
        if anchor_sizes is not None:
            model.rpn.anchor_generator = _anchor_generator(anchor_sizes, levels=5, per_level=True)
        if model.roi_heads.box_predictor.cls_score.out_features != num_classes:
            replace_predictors(model, num_classes)
    elif arch in _LIGHT_BACKBONES:
        if weights is not None:
            raise ValueError(
                f"weights={weights!r}: no COCO detector weights exist for arch={arch}; use weights_backbone."
            )
        model = _light_mask_rcnn(
            arch,
            num_classes,
            weights_backbone,
            trainable_backbone_layers,
            anchor_sizes,
            fpn_channels,
            fetch,
            **detector_options,
        )
    else:
        raise ValueError(f"arch={arch!r} is not one of {', '.join(Architecture.__args__)}.")
    model.transform = DataSizedTransform(model.transform.image_mean, model.transform.image_std)
    # Box deltas in float32: under bf16 autocast torchvision's box coder would otherwise cast the proposals
    # to bfloat16, whose 8-bit mantissa rounds pixel coordinates of a 1024-pixel image to 4-8 pixels.
    model.rpn.head.register_forward_hook(_float32_outputs)
    model.roi_heads.box_predictor.register_forward_hook(_float32_outputs)
    return model


def _float32_outputs(module: nn.Module, inputs: object, output: object) -> object:
    if isinstance(output, torch.Tensor):
        return output.float()
    if isinstance(output, (list, tuple)):
        return type(output)(_float32_outputs(module, inputs, item) for item in output)
    return output


def _light_mask_rcnn(
    arch: str,
    num_classes: int,
    weights_backbone: str | None,
    trainable_backbone_layers: int | None,
    anchor_sizes: list[int] | None,
    channels: int,
    fetch: bool,
    **detector_options: object,
) -> MaskRCNN:
    trained = weights_backbone is not None
    backbone_weights = _weights(arch, weights_backbone) if fetch else None
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if trained else nn.BatchNorm2d
    mobilenet = arch == "mobilenet_v3_large"
    if not trained:
        layers = 6 if mobilenet else 5  # every stage learns from random weights
    else:
        layers = 3 if trainable_backbone_layers is None else trainable_backbone_layers  # torchvision's default
    with fetching_weights(arch, weights_backbone if fetch else None, "model.init_args.weights_backbone"):
        backbone = _light_backbone(arch, backbone_weights, norm_layer, layers)
    if channels != backbone.out_channels:
        in_channels = [block[0].in_channels for block in backbone.fpn.inner_blocks]
        backbone.fpn = FeaturePyramidNetwork(in_channels, channels, extra_blocks=backbone.fpn.extra_blocks)
        backbone.out_channels = channels
    levels = 3 if mobilenet else 5
    anchors = _anchor_generator(anchor_sizes or [32, 64, 128, 256, 512], levels=levels, per_level=not mobilenet)
    representation = 4 * channels
    return MaskRCNN(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        box_head=TwoMLPHead(channels * 7 * 7, representation),
        box_predictor=FastRCNNPredictor(representation, num_classes),
        mask_head=MaskRCNNHeads(channels, [channels] * 4, 1),
        mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
        **detector_options,
    )


def _freeze_batch_norms(module: nn.Module) -> None:
    """Swap each ``BatchNorm2d`` below ``module`` for ``FrozenBatchNorm2d`` (the pretrained layout)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, misc_nn_ops.FrozenBatchNorm2d(child.num_features, eps=child.eps))
        else:
            _freeze_batch_norms(child)


@contextmanager
def without_weight_download() -> Iterator[None]:
    """Build models with ``weights`` / ``weights_backbone`` in their pretrained layout without fetching them.

    For loading a checkpoint, which holds every weight: no download, and no network needed.
    """
    token = _FETCH_WEIGHTS.set(False)
    try:
        yield
    finally:
        _FETCH_WEIGHTS.reset(token)


def replace_predictors(model: MaskRCNN, num_classes: int) -> None:
    """Give ``model`` new box and mask predictors for ``num_classes`` (the COCO ones have 91)."""
    box_in = model.roi_heads.box_predictor.cls_score.in_features
    model.roi_heads.box_predictor = FastRCNNPredictor(box_in, num_classes)
    mask_in = model.roi_heads.mask_predictor.conv5_mask.in_channels
    model.roi_heads.mask_predictor = MaskRCNNPredictor(mask_in, 256, num_classes)


def parameter_groups(model: MaskRCNN, lr_multipliers: dict[str, float]) -> list[dict[str, object]]:
    """Trainable parameters in the groups of :data:`PARAMETER_GROUPS`, each with its ``lr_mult``.

    Args:
        model: The detector.
        lr_multipliers: Multiplier of the optimizer's learning rate per group; missing groups get 1.0.

    """
    unknown = set(lr_multipliers) - set(PARAMETER_GROUPS)
    if unknown:
        raise ValueError(
            f"lr_multipliers has unknown groups {sorted(unknown)}; the groups are {list(PARAMETER_GROUPS)}."
        )
    owners = {
        "backbone": [model.backbone],
        "rpn": [model.rpn],
        "box_head": [model.roi_heads.box_head, model.roi_heads.box_predictor],
        "mask_head": [model.roi_heads.mask_head, model.roi_heads.mask_predictor],
    }
    seen: set[int] = set()
    groups: list[dict[str, object]] = []
    for name in PARAMETER_GROUPS:
        modules = owners.get(name, [model])
        params = [p for m in modules for p in m.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "name": name, "lr_mult": float(lr_multipliers.get(name, 1.0))})
    return groups


@contextmanager
def loss_mode(model: MaskRCNN) -> Iterator[None]:
    """Let the RPN and RoI heads compute their losses while every layer (batch norm...) stays in eval mode."""
    parts = (model, model.rpn, model.roi_heads)
    before = [p.training for p in parts]
    for part in parts:
        part.training = True
    try:
        yield
    finally:
        for part, mode in zip(parts, before, strict=True):
            part.training = mode


def losses_and_detections(
    model: MaskRCNN, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Losses and detections from one backbone pass, for validation (torchvision returns one or the other).

    The model must be in eval mode; the losses are those training would compute on the same batch.
    """
    sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
    image_list, targets = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    with loss_mode(model):
        proposals, rpn_losses = model.rpn(image_list, features, targets)
        _, roi_losses = model.roi_heads(features, proposals, image_list.image_sizes, targets)
    proposals, _ = model.rpn(image_list, features)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    detections = model.transform.postprocess(detections, image_list.image_sizes, sizes)
    return {**roi_losses, **rpn_losses}, detections


def _light_backbone(arch: str, weights: object, norm_layer: type[nn.Module], layers: int) -> nn.Module:
    """The FPN backbone of a lighter Mask R-CNN (ResNet-18/34 or MobileNetV3)."""
    if arch == "mobilenet_v3_large":
        return mobilenet_backbone(
            backbone_name=arch,
            weights=weights,
            fpn=True,
            norm_layer=norm_layer,
            trainable_layers=layers,
        )
    return resnet_fpn_backbone(backbone_name=arch, weights=weights, norm_layer=norm_layer, trainable_layers=layers)
