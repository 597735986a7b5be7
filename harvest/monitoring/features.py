"""Embeddings of the images a model sees, captured with a forward hook while it predicts (no extra pass).

The embedding is the output of the model's feature extractor, pooled to one vector per image: the
classifier's ``encoder`` (its pooled backbone features) or, for a torchvision detector
(``module.model.backbone``), the global average of the coarsest FPN level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def embedding_layer(module: nn.Module) -> nn.Module | None:
    """The module whose output is the embedding (``encoder``, else ``model.backbone``), if any."""
    encoder = getattr(module, "encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder
    backbone = getattr(getattr(module, "model", None), "backbone", None)
    return backbone if isinstance(backbone, nn.Module) else None


def pooled(output: Any) -> torch.Tensor:
    """One vector per image: the last entry of a feature dict, spatial dimensions averaged away."""
    if isinstance(output, dict):
        output = list(output.values())[-1]
    output = output.detach().float()
    return output.mean(dim=(2, 3)) if output.ndim == 4 else output.flatten(1)


class EmbeddingCapture:
    """Collect pooled embeddings of every forward pass of ``module``'s feature extractor.

    Use as a context manager (or :meth:`attach` / :meth:`detach`); :meth:`take` returns and forgets
    what was captured since the last call (``None`` when the model has no known feature extractor).

    Args:
        module: A Harvest LightningModule.

    """

    def __init__(self, module: nn.Module) -> None:
        self.layer = embedding_layer(module)
        self._rows: list[torch.Tensor] = []
        self._handle: Any = None

    def attach(self) -> EmbeddingCapture:
        """Start capturing."""
        if self.layer is not None and self._handle is None:
            self._handle = self.layer.register_forward_hook(lambda _m, _i, out: self._rows.append(pooled(out).cpu()))
        return self

    def detach(self) -> None:
        """Stop capturing."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> EmbeddingCapture:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def take(self) -> np.ndarray | None:
        """The embeddings captured since the last call, ``[N, D]``."""
        if not self._rows:
            return None
        rows, self._rows = self._rows, []
        return torch.cat(rows).numpy()
