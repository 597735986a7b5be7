"""Self-training with a logistic-regression classifier, in torch (scikit-learn's ``SelfTrainingClassifier``).

The base classifier is scikit-learn's default ``LogisticRegression``: multinomial, L2 penalty with
``C = 1`` on the weights (not the intercepts), minimised with L-BFGS. Self-training fits it on the
labeled points, adopts the predictions on unlabeled points whose probability exceeds the threshold,
and repeats (at most ``max_iter`` rounds, until nothing new is adopted); the last fit uses every
adopted label. The result is a weight matrix and a bias vector, so predicting is one matrix product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: scikit-learn's ``SelfTrainingClassifier(max_iter=10)``.
ROUNDS = 10


def fit_logistic(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, c: float = 1.0, max_iter: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression: weights ``[classes, d]`` and bias ``[classes]``.

    Classes without any example get zero weights and a bias of ``-inf`` (probability zero), as
    scikit-learn's estimator knows only the classes it saw.
    """
    x = features.float()
    seen = torch.unique(labels)
    y = torch.searchsorted(seen, labels)
    weight = torch.zeros((len(seen), x.shape[1]), device=x.device, requires_grad=True)
    bias = torch.zeros(len(seen), device=x.device, requires_grad=True)
    penalty = 0.5 / (c * len(x))
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, y) + penalty * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    full_weight = torch.zeros((num_classes, x.shape[1]), device=x.device)
    full_bias = torch.full((num_classes,), -torch.inf, device=x.device)
    full_weight[seen], full_bias[seen] = weight.detach(), bias.detach()
    return full_weight, full_bias


def logistic_proba(features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``[n, classes]`` of a fitted logistic regression."""
    return torch.softmax(features.float() @ weight.float().T + bias.float(), dim=1)


@torch.no_grad()
def self_training(
    features: torch.Tensor, targets: torch.Tensor, num_classes: int, threshold: float, rounds: int = ROUNDS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit self-training on ``features`` (``targets`` ``-1`` when unlabeled); return the final weights and bias."""
    labels = targets.clone()
    if not bool((labels >= 0).any()):
        raise ValueError("self_training needs at least one labeled point (every target is -1).")
    for _ in range(rounds):
        unlabeled = labels < 0
        if not bool(unlabeled.any()):
            break
        weight, bias = fit_logistic(features[~unlabeled], labels[~unlabeled], num_classes)
        confidence, predicted = logistic_proba(features[unlabeled], weight, bias).max(1)
        adopted = confidence > threshold
        if not bool(adopted.any()):
            break
        labels[unlabeled.nonzero().squeeze(1)[adopted]] = predicted[adopted]
    known = labels >= 0
    return fit_logistic(features[known], labels[known], num_classes)
