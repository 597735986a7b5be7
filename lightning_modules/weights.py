"""Pretrained torchvision weights: a failed download becomes one line saying what to do offline."""

from __future__ import annotations

import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torchvision.models import get_model_weights

from harvest.core.errors import first_line


def _where_to_put(model_name: str, weights: str) -> str:
    try:
        url = get_model_weights(model_name).verify(weights).url
    except (KeyError, ValueError, AttributeError):
        return ""
    return f"put {Path(url).name} (from {url}) into {Path(torch.hub.get_dir()) / 'checkpoints'}/ or "


@contextmanager
def fetching_weights(model_name: str, weights: str | None, setting: str) -> Iterator[None]:
    """Build a model inside this block; a failed download of ``weights`` raises one clear line.

    Args:
        model_name: torchvision name of the model whose weights are fetched (``resnet50``,
            ``maskrcnn_resnet50_fpn_v2``...).
        weights: The requested weights (``DEFAULT``, ``IMAGENET1K_V2``...), or ``None`` (nothing to fetch).
        setting: The config key that chose them, named in the message (``model.init_args.weights``).
    """
    try:
        yield
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        if weights is None:
            raise
        reason = first_line(error)
        raise RuntimeError(
            f"could not load the {weights} weights of {model_name} ({reason}): "
            f"{_where_to_put(model_name, weights)}set {setting}: null to start from random weights."
        ) from error
