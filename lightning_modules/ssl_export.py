"""The classifier's served predictor as one traceable ``nn.Module``: images in, the predictor's probabilities out.

``SemiSupervisedClassifier.classify`` serves ``predict_algorithm``, else the best algorithm on
validation (``run_results["best_algorithm"]``). :class:`ServedPredictor` computes the same thing
from one graph that ``torch.onnx.export`` and ``torch.jit.trace`` record:

- backbone -> SSL features (flattened, L2-normalised when the model was trained so);
- label propagation / spreading, ``knn`` kernel: the label distributions of the ``n_neighbors``
  nearest stored training features, summed and normalised to one (``graph_ssl.predict_proba``
  without its blocking: squared distances up to the query's own norm, one ``TopK``);
  ``rbf`` kernel: the kernel-weighted sum over every training point;
- self-training: the logistic regression's softmax;
- ``cnn_head``: the CNN head's softmax.

The graph computes in float32 where ``graph_ssl`` uses float64 for the label sums; the stored
training features are the fitted half-precision copy (half the file), widened to float32 in the
graph as the module does. A query whose ``k``-th and ``k+1``-th neighbours are at the same float32
distance may pick another neighbour than PyTorch; the export's check reports such a difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.ssl_algorithms import GRAPH_VARIANTS

CNN_HEAD = "cnn_head"


def served_algorithm(module: nn.Module) -> str:
    """The algorithm ``module.classify`` serves: ``predict_algorithm``, else the best on validation, else the head."""
    return module.hparams.get("predict_algorithm") or module.run_results.get("best_algorithm") or CNN_HEAD


class NotFittedError(RuntimeError):
    """The predictor asked for is not fitted in the model (the message names the fix)."""


class ServedPredictor(nn.Module):
    """Backbone + the served predictor: ``(probabilities float32[N, C], features float32[N, D])``.

    Args:
        module: A ``SemiSupervisedClassifier`` with its fitted SSL state.
        algorithm: ``cnn_head`` or a fitted algorithm; ``None``: the one the module serves.

    Raises:
        NotFittedError: When ``algorithm`` is not fitted in ``module``.

    """

    def __init__(self, module: nn.Module, algorithm: str | None = None) -> None:
        super().__init__()
        self.algorithm = algorithm or served_algorithm(module)
        if self.algorithm != CNN_HEAD and self.algorithm not in module.ssl.fitted():
            raise NotFittedError(
                f"no fitted SSL predictor {self.algorithm!r} in the model (fitted: {module.ssl.fitted()}): "
                "export --head cnn, or register a checkpoint written at the end of fit."
            )
        self.encoder, self.head = module.encoder, module.head
        self.normalize = bool(module.hparams.get("normalize_features", True))
        self.kernel, self.gamma = module.params.kernel, float(module.params.gamma)
        ssl = module.ssl
        if self.algorithm in GRAPH_VARIANTS:
            base = ssl.features.detach().cpu()  # half precision in the file, widened per call as the module does
            self.register_buffer("base", base)
            self.register_buffer("base_norms", (base.float() * base.float()).sum(1))
            self.register_buffer("distributions", getattr(ssl, self.algorithm).detach().float().cpu())
            self.k = min(int(module.params.n_neighbors), len(base))
        elif self.algorithm == "self_training":
            self.register_buffer("weight", ssl.self_training_weight.detach().float().cpu())
            self.register_buffer("bias", ssl.self_training_bias.detach().float().cpu())

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(probabilities, features)``; ``features`` are the CNN's embedding or, for SSL, what it sees."""
        raw = self.encoder(image).flatten(1).float()
        if self.algorithm == CNN_HEAD:
            return self.head(raw).float().softmax(1), raw
        features = F.normalize(raw, dim=1) if self.normalize else raw
        if self.algorithm == "self_training":
            return torch.softmax(features @ self.weight.T + self.bias, dim=1), features
        base = self.base.float()
        if self.kernel == "knn":
            distances = self.base_norms[None, :] - 2.0 * features @ base.T
            neighbors = torch.topk(distances, self.k, dim=1, largest=False).indices
            scores = self.distributions[neighbors].sum(1)
        else:
            squared = (features * features).sum(1, keepdim=True) + self.base_norms[None, :]
            squared = (squared - 2.0 * features @ base.T).clamp_min(0.0)
            scores = torch.exp(-self.gamma * squared) @ self.distributions
        total = scores.sum(1, keepdim=True)
        return scores / torch.where(total == 0, torch.ones_like(total), total), features


def classifier_graph(module: nn.Module, head: str = "served") -> ServedPredictor:
    """The export graph of ``module``: its served predictor (``head="served"``) or the CNN head (``"cnn"``)."""
    if head not in ("served", "cnn"):
        raise ValueError(f"--head {head}: use served or cnn.")
    return ServedPredictor(module, CNN_HEAD if head == "cnn" else None).eval()
