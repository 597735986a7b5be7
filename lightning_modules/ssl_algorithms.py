"""The SSL algorithms of the grocery pipeline: names, parameters, evaluation and the results table.

Three algorithms run on CNN features: label propagation and label spreading (graph algorithms,
:mod:`lightning_modules.graph_ssl`) and self-training with a logistic regression
(:mod:`lightning_modules.self_training`), all in torch on the trainer's device, with scikit-learn's
semantics and the seed project's parameters. Their fitted state lives in
:class:`lightning_modules.ssl_state.FittedSSL`. Scores are accuracy and macro F1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

ALGORITHMS = ("label_propagation", "label_spreading", "self_training")
#: The graph algorithms and their variant of the iterations.
GRAPH_VARIANTS = {"label_propagation": "propagation", "label_spreading": "spreading"}
KERNELS = ("knn", "rbf")


@dataclass(frozen=True)
class SSLParams:
    """Parameters of the three algorithms (the seed's defaults)."""

    kernel: str = "knn"
    n_neighbors: int = 7
    gamma: float = 20.0
    alpha: float = 0.2
    max_iter: int = 1000
    threshold: float = 0.75

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel={self.kernel!r}: use one of {', '.join(KERNELS)}.")
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors={self.n_neighbors}: use 1 or more.")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha={self.alpha}: use a value in (0, 1).")

    def check_size(self, count: int, where: str = "training images", key: str = "model.init_args.n_neighbors") -> None:
        """Refuse a ``knn`` graph with ``n_neighbors`` not below the number of points (before any work)."""
        if self.kernel == "knn" and self.n_neighbors >= count:
            raise ValueError(
                f"{key}={self.n_neighbors} needs more than that many {where} "
                f"(found {count}): lower n_neighbors or add images."
            )


@dataclass
class SSLResult:
    """One algorithm evaluated on one split: true and predicted class indices and the two scores."""

    y_true: np.ndarray
    y_pred: np.ndarray
    accuracy: float
    f1: float


def check_algorithms(names: list[str]) -> list[str]:
    """``names`` as a list after checking each is known and the list is not empty."""
    unknown = [n for n in names if n not in ALGORITHMS]
    if unknown or not names:
        raise ValueError(f"model.init_args.algorithms={list(names)}: choose one or more of {', '.join(ALGORITHMS)}.")
    return list(names)


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


#: The metric of the predictor that ``predict`` serves: what the registry records and promotes on.
SERVED_METRIC = "summary/val_accuracy"


def summarize(
    val: dict[str, SSLResult],
    test: dict[str, SSLResult],
    unlabeled: dict[str, SSLResult],
    head: tuple[SSLResult, SSLResult],
    predict_algorithm: str | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Metrics named ``{algo}/test_accuracy``, ``{algo}/f1_score``… and the run's results dict.

    The best algorithm is chosen on the validation images, never on the test images;
    ``summary/best_test_accuracy`` is its test accuracy. The served predictor is
    ``predict_algorithm`` when set (``cnn_head`` included), else the best algorithm; its validation
    accuracy is :data:`SERVED_METRIC`, named in the results as their ``monitor`` (the registry's
    headline metric and the ``staging`` decision).

    Args:
        val: Each algorithm on the validation images.
        test: Each algorithm on the test images.
        unlabeled: Each algorithm on the unlabeled training images (may be empty).
        head: The fine-tuned CNN's own classifier on the validation and the test images (the
            supervised baseline).
        predict_algorithm: The algorithm ``predict`` is configured to use, if any.

    Returns:
        ``(metrics, run_results)``.

    """
    best = pick_best(val)
    served = predict_algorithm or best
    metrics: dict[str, float] = {}
    for name, result in test.items():
        metrics[f"{name}/test_accuracy"] = result.accuracy
        metrics[f"{name}/f1_score"] = result.f1
        metrics[f"{name}/val_accuracy"] = val[name].accuracy
        if name in unlabeled:
            metrics[f"{name}/unlabeled_accuracy"] = unlabeled[name].accuracy
    metrics["cnn_head/val_accuracy"] = head[0].accuracy
    metrics["cnn_head/test_accuracy"], metrics["cnn_head/f1_score"] = head[1].accuracy, head[1].f1
    metrics["summary/best_test_accuracy"] = test[best].accuracy
    metrics[SERVED_METRIC] = metrics[f"{served}/val_accuracy"]
    per_algorithm: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        row, _, column = key.partition("/")
        if row != "summary":
            per_algorithm.setdefault(row, {})[column] = value
    run_results = {
        "best_algorithm": best,
        "best_test_accuracy": test[best].accuracy,
        "selected_by": "val_accuracy",
        "predictor": served,
        "monitor": SERVED_METRIC,
        "mode": "max",
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
