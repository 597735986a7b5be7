"""The fitted SSL predictors as tensors: buffers of a small ``nn.Module`` that Lightning saves like any weight.

One copy of the training features in half precision serves both graph algorithms (their inductive
prediction searches it), each graph algorithm adds its label distributions ``[n, classes]``, and
self-training adds a logistic regression's weights and bias. A checkpoint holding them loads with
``torch.load(weights_only=True)``; nothing is pickled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from lightning_modules import graph_ssl
from lightning_modules.self_training import logistic_proba, self_training
from lightning_modules.ssl_algorithms import GRAPH_VARIANTS, SSLParams

log = logging.getLogger(__name__)

_BUFFERS = ("features", "label_propagation", "label_spreading", "self_training_weight", "self_training_bias")


def _synced(started: float, device: torch.device) -> float:
    """Seconds since ``started``, after the device finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


class FittedSSL(nn.Module):
    """Fitted label propagation, label spreading and self-training, as buffers (empty until :meth:`fit`)."""

    def __init__(self) -> None:
        super().__init__()
        for name in _BUFFERS:
            self.register_buffer(name, torch.zeros(0, dtype=torch.float16 if name == "features" else torch.float32))
        self._base: tuple[torch.Tensor, torch.Tensor] | None = None  # (features, their float32 copy)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # fitted shapes differ from the empty ones: take the stored tensors' shapes before copying
        for name in _BUFFERS:
            stored = state_dict.get(prefix + name)
            if stored is not None:
                setattr(self, name, torch.empty_like(stored, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fitted(self) -> list[str]:
        """Names of the fitted algorithms."""
        names = [name for name in GRAPH_VARIANTS if getattr(self, name).numel()]
        return names + (["self_training"] if self.self_training_weight.numel() else [])

    def clear(self) -> None:
        """Forget every fitted predictor (fine-tuning moved the features they were fitted on)."""
        for name in _BUFFERS:
            setattr(self, name, getattr(self, name).new_zeros(0))

    def fit(
        self,
        names: list[str],
        params: SSLParams,
        features: torch.Tensor,
        targets: torch.Tensor,
        num_classes: int,
    ) -> dict[str, Any]:
        """Fit each algorithm in ``names`` on ``features`` (``targets`` ``-1`` when unlabeled), on their device.

        Returns:
            Per algorithm: seconds, and for the graph algorithms iterations and convergence; under
            ``knn_graph`` the seconds of the shared kNN graph.

        """
        with torch.inference_mode(False):  # the test loop runs in inference mode; self-training needs autograd
            return self._fit(names, params, features.float().clone(), targets.long().clone(), num_classes)

    def _fit(
        self, names: list[str], params: SSLParams, features: torch.Tensor, targets: torch.Tensor, num_classes: int
    ) -> dict[str, Any]:
        self.clear()
        device = features.device
        self.features = features.half()
        info: dict[str, Any] = {}
        graph = [n for n in names if n in GRAPH_VARIANTS]
        neighbors = None
        if graph and params.kernel == "knn":
            started = time.perf_counter()
            neighbors = graph_ssl.knn_graph(features, params.n_neighbors)
            info["knn_graph"] = {"seconds": _synced(started, device)}
        for name in graph:
            started = time.perf_counter()
            variant = GRAPH_VARIANTS[name]
            operator = (
                graph_ssl.knn_operator(neighbors, variant)
                if neighbors is not None
                else graph_ssl.rbf_operator(features, params.gamma, variant)
            )
            distributions, iterations, converged = graph_ssl.iterate(
                operator, targets, num_classes, variant, params.alpha, params.max_iter
            )
            if not converged:
                log.warning("%s did not converge within max_iter=%d; its results may be poor.", name, params.max_iter)
            setattr(self, name, distributions.float().to(device))
            info[name] = {"iterations": iterations, "converged": converged, "seconds": _synced(started, device)}
        if "self_training" in names:
            started = time.perf_counter()
            self.self_training_weight, self.self_training_bias = self_training(
                features, targets, num_classes, params.threshold
            )
            info["self_training"] = {"seconds": _synced(started, device)}
        return info

    @torch.no_grad()
    def predict_proba(self, name: str, features: torch.Tensor, params: SSLParams) -> torch.Tensor:
        """Class probabilities ``[m, classes]`` of algorithm ``name`` for ``features`` (float64 for graphs)."""
        if name not in self.fitted():
            raise RuntimeError(
                f"no fitted SSL predictor {name!r}: fit first, load a checkpoint written at the end of fit, "
                "or set model.init_args.predict_algorithm: cnn_head."
            )
        features = features.to(self.features.device).float()
        if name == "self_training":
            return logistic_proba(features, self.self_training_weight, self.self_training_bias)
        if self._base is None or self._base[0] is not self.features:  # one float32 copy per fitted set
            self._base = (self.features, self.features.float())
        return graph_ssl.predict_proba(
            self._base[1], getattr(self, name), features, params.kernel, params.n_neighbors, params.gamma
        )

    def training_labels(self, name: str) -> torch.Tensor:
        """The class each training point got from algorithm ``name`` (transduction; no new search)."""
        if name == "self_training":
            return logistic_proba(self.features, self.self_training_weight, self.self_training_bias).argmax(1)
        return getattr(self, name).argmax(1)

    def predict(self, name: str, features: torch.Tensor, params: SSLParams) -> torch.Tensor:
        """Predicted class indices of algorithm ``name``."""
        return self.predict_proba(name, features, params).argmax(1)
