"""The scikit-learn side of the grocery pipeline: semi-supervised estimators on CNN features.

Three algorithms from :mod:`sklearn.semi_supervised`, built by :func:`make_estimator`, fitted on the
features of every training image (unlabeled ones carry the label ``-1``), evaluated with accuracy
and macro F1, and serialised with skops into ``uint8`` tensors, which a checkpoint loaded with
``torch.load(weights_only=True)`` can carry. Loading accepts only the types in
:data:`TRUSTED_TYPES`; nothing is unpickled.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.semi_supervised import LabelPropagation, LabelSpreading, SelfTrainingClassifier

log = logging.getLogger(__name__)

ALGORITHMS = ("label_propagation", "label_spreading", "self_training")

#: Types (beyond numpy, builtins and scikit-learn's estimators that skops trusts by default) that the
#: fitted estimators hold: the nearest-neighbour index of the ``knn`` kernel.
TRUSTED_TYPES = [
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.EuclideanDistance32",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
]


@dataclass(frozen=True)
class SSLParams:
    """Parameters of the three algorithms (the seed's defaults)."""

    kernel: str = "knn"
    n_neighbors: int = 7
    gamma: float = 20.0
    alpha: float = 0.2
    max_iter: int = 1000
    threshold: float = 0.75


@dataclass
class SSLResult:
    """One algorithm evaluated on one split: true and predicted class indices and the two scores."""

    y_true: np.ndarray
    y_pred: np.ndarray
    accuracy: float
    f1: float


def make_estimator(name: str, params: SSLParams) -> BaseEstimator:
    """Build a fresh, unfitted estimator for algorithm ``name`` (one of :data:`ALGORITHMS`)."""
    graph = {
        "kernel": params.kernel,
        "n_neighbors": params.n_neighbors,
        "gamma": params.gamma,
        "max_iter": params.max_iter,
    }
    if name == "label_propagation":
        return LabelPropagation(**graph)
    if name == "label_spreading":
        return LabelSpreading(alpha=params.alpha, **graph)
    if name == "self_training":
        return SelfTrainingClassifier(LogisticRegression(max_iter=1000), threshold=params.threshold)
    raise ValueError(
        f"unknown SSL algorithm {name!r}: choose from {', '.join(ALGORITHMS)} (model.init_args.algorithms)."
    )


def check_algorithms(names: list[str]) -> list[str]:
    """``names`` as a list after checking each is known and the list is not empty."""
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown or not names:
        raise ValueError(
            f"model.init_args.algorithms={list(names)}: choose one or more of {', '.join(ALGORITHMS)}."
        )
    return list(names)


def fit_estimators(
    names: list[str], params: SSLParams, features: np.ndarray, targets: np.ndarray
) -> dict[str, BaseEstimator]:
    """Fit each algorithm in ``names`` on ``features``; ``targets`` holds ``-1`` for unlabeled rows."""
    if params.kernel == "knn" and params.n_neighbors >= len(features):
        raise ValueError(
            f"model.init_args.n_neighbors={params.n_neighbors} needs more than that many training images "
            f"(found {len(features)}): lower n_neighbors or add images."
        )
    fitted = {}
    for name in names:
        estimator = make_estimator(name, params)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            estimator.fit(features, targets)
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            log.warning(
                "%s did not converge within max_iter=%d; its results may be poor.", name, params.max_iter
            )
        fitted[name] = estimator
    return fitted


def evaluate(estimator: BaseEstimator, features: np.ndarray, labels: np.ndarray) -> SSLResult:
    """Accuracy and macro F1 of ``estimator`` on labelled ``features``."""
    y_pred = np.asarray(estimator.predict(features), dtype=np.int64)
    return scores(np.asarray(labels, dtype=np.int64), y_pred)


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> SSLResult:
    """Accuracy and macro F1 of ``y_pred`` against ``y_true`` (class indices)."""
    accuracy = float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")
    f1 = float(f1_score(y_true, y_pred, average="macro", zero_division=0)) if len(y_true) else float("nan")
    return SSLResult(y_true=y_true, y_pred=y_pred, accuracy=accuracy, f1=f1)


def pick_best(val_results: dict[str, SSLResult]) -> str:
    """Return the algorithm with the highest validation accuracy (the first listed wins a tie)."""
    return max(
        val_results,
        key=lambda name: (
            np.nan_to_num(val_results[name].accuracy, nan=-1.0),
            -list(val_results).index(name),
        ),
    )


def to_tensor(estimator: BaseEstimator) -> torch.Tensor:
    """``estimator`` as skops bytes in a ``uint8`` tensor (checkpoint-safe)."""
    import skops.io as sio

    return torch.frombuffer(bytearray(sio.dumps(estimator)), dtype=torch.uint8)


def from_tensor(data: torch.Tensor, name: str = "estimator") -> BaseEstimator:
    """Load an estimator written by :func:`to_tensor`, refusing any type outside :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    raw = data.cpu().numpy().tobytes()
    untrusted = sorted(set(sio.get_untrusted_types(data=raw)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ValueError(f"refusing to load the {name} estimator: it contains untrusted types {untrusted}.")
    return sio.loads(raw, trusted=TRUSTED_TYPES)


def predict_proba(estimator: BaseEstimator, features: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities ``[N, num_classes]``, columns in class-index order whatever classes were seen."""
    raw = np.asarray(estimator.predict_proba(features), dtype=np.float64)
    probabilities = np.zeros((len(features), num_classes))
    probabilities[:, np.asarray(estimator.classes_, dtype=np.int64)] = np.nan_to_num(raw)
    return probabilities


def summarize(
    val: dict[str, SSLResult], test: dict[str, SSLResult], unlabeled: dict[str, SSLResult], head: SSLResult
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics named ``{algo}/test_accuracy``, ``{algo}/f1_score``… and the run's results dict.

    The best algorithm is chosen on the validation images, never on the test images;
    ``summary/best_test_accuracy`` is its test accuracy.

    Args:
        val: Each algorithm on the validation images.
        test: Each algorithm on the test images.
        unlabeled: Each algorithm on the unlabeled training images (may be empty).
        head: The fine-tuned CNN's own classifier on the test images (the supervised baseline).

    Returns:
        ``(metrics, run_results)``.

    """
    best = pick_best(val)
    metrics: dict[str, float] = {}
    for name, result in test.items():
        metrics[f"{name}/test_accuracy"] = result.accuracy
        metrics[f"{name}/f1_score"] = result.f1
        metrics[f"{name}/val_accuracy"] = val[name].accuracy
        if name in unlabeled:
            metrics[f"{name}/unlabeled_accuracy"] = unlabeled[name].accuracy
    metrics["cnn_head/test_accuracy"], metrics["cnn_head/f1_score"] = head.accuracy, head.f1
    metrics["summary/best_test_accuracy"] = test[best].accuracy
    per_algorithm: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        row, _, column = key.partition("/")
        if row != "summary":
            per_algorithm.setdefault(row, {})[column] = value
    run_results = {
        "best_algorithm": best,
        "best_test_accuracy": test[best].accuracy,
        "selected_by": "val_accuracy",
        "algorithms": {name: per_algorithm[name] for name in test},
        "cnn_head": per_algorithm["cnn_head"],
    }
    return metrics, run_results


def prediction_records(
    probabilities: np.ndarray, class_names: list[str], paths: list[str] | None, algorithm: str
) -> list[dict[str, Any]]:
    """One record per image: path, class name and index, confidence, probabilities per class, algorithm."""
    records = []
    for i, row in enumerate(probabilities):
        best = int(row.argmax())
        records.append(
            {
                "path": paths[i] if paths else None,
                "class_name": class_names[best],
                "class_index": best,
                "confidence": float(row[best]),
                "probabilities": dict(zip(class_names, map(float, row), strict=True)),
                "algorithm": algorithm,
            }
        )
    return records
