"""Torchvision classification backbones as feature extractors, built by name."""

from __future__ import annotations

import torchvision
from torch import nn

from lightning_modules.weights import fetching_weights


def build_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """Build a torchvision classifier without its last linear layer; return it and its feature width.

    Args:
        name: Any name of :func:`torchvision.models.list_models` for classification, e.g.
            ``resnet18``, ``resnet50``, ``efficientnet_b0``, ``mobilenet_v3_small``, ``convnext_tiny``.
        weights: Pretrained weights of that model (e.g. ``IMAGENET1K_V2`` or ``DEFAULT``), or ``None``
            for random initialisation. Weights are downloaded once into torch's hub cache.

    Returns:
        The feature extractor (images ``[B, 3, H, W]`` -> features ``[B, D]``) and ``D``.

    """
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise ValueError(
            f"model.init_args.backbone={name!r} is not a torchvision classification model: "
            f"choose one of {', '.join(known)}."
        )
    if weights is not None:
        valid = [w.name for w in torchvision.models.get_model_weights(name)] + ["DEFAULT"]
        if weights not in valid:
            raise ValueError(
                f"model.init_args.weights={weights!r} does not exist for {name}: use one of {valid} or null."
            )
    with fetching_weights(name, weights, "model.init_args.weights"):
        model = torchvision.models.get_model(name, weights=weights)

    linears = [(path, module) for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ValueError(f"model.init_args.backbone={name!r} has no final linear classifier to replace.")
    path, classifier = linears[-1]
    parent_path, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, child, nn.Identity())
    return model, classifier.in_features
