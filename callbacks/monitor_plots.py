"""The two plots of a monitoring report: prediction distribution and confidence histogram, each with its reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _fractions(counts: list[int]) -> np.ndarray:
    values = np.asarray(counts, dtype=float)
    return values / values.sum() if values.sum() else values


def _aligned(
    report: dict[str, Any], reference: dict[str, Any] | None
) -> tuple[list[Any], np.ndarray, np.ndarray | None]:
    current = dict(zip(report["labels"], report["counts"], strict=True))
    ref = dict(zip(reference["labels"], reference["counts"], strict=True)) if reference else {}
    labels = list(report["labels"]) + [label for label in ref if label not in current]
    if labels and all(isinstance(label, int) for label in labels):
        labels = list(range(max(labels) + 1))  # detections per image: a numeric axis without gaps
    cur = _fractions([current.get(label, 0) for label in labels])
    return labels, cur, _fractions([ref.get(label, 0) for label in labels]) if reference else None


def write_plots(report: dict[str, Any], reference: dict[str, Any] | None, folder: Path) -> dict[str, Path]:
    """Save both plots into ``folder``; every category is shown, the reference beside the current bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "confidence_histogram": folder / "monitor_confidence_histogram.png",
        "prediction_distribution": folder / "monitor_prediction_distribution.png",
    }
    width = 0.4 if reference else 0.8
    labels, current, ref = _aligned(
        report["prediction_distribution"], reference and reference["prediction_distribution"]
    )
    numeric = report.get("kind") == "detector"
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(labels)), 3.2))
    ax.bar(x - (width / 2 if ref is not None else 0), current, width, label=f"current ({report['samples']} images)")
    if ref is not None:
        ax.bar(x + width / 2, ref, width, label=f"reference ({reference['samples']} images)", alpha=0.7)
    ax.set_xticks(x, [str(label) for label in labels], rotation=0 if numeric else 60)
    xlabel = "detections per image" if numeric else "predicted class"
    ax.set(xlabel=xlabel, ylabel="fraction of images", title="Prediction distribution")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["prediction_distribution"], dpi=100)
    plt.close(fig)

    bins = np.asarray(report["confidence_histogram"]["bins"])
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(bins[:-1], _fractions(report["confidence_histogram"]["counts"]), width=0.1, align="edge", label="current")
    if reference:
        fractions = _fractions(reference["confidence_histogram"]["counts"])
        ax.step(bins, [*fractions, fractions[-1]], where="post", color="black", label="reference")
    ax.set(xlabel="confidence", ylabel="fraction of images", title="Confidence histogram")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(paths["confidence_histogram"], dpi=100)
    plt.close(fig)
    return paths
