"""Numbers of inference monitoring: running statistics, histograms and drift scores.

Drift is measured against a reference report (the same statistics of a trusted run, e.g.
``harvest predict`` on the test split): the population stability index (PSI) of the confidence
histogram and the Jensen-Shannon divergence of the predicted-class distribution. PSI above 0.2
is the usual threshold for a significant shift.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)


def psi(expected: list[float], actual: list[float], eps: float = 1e-4) -> float:
    """Population stability index between two histograms (counts or fractions over the same bins)."""
    p = np.asarray(expected, dtype=float)
    q = np.asarray(actual, dtype=float)
    p = np.clip(p / max(p.sum(), eps), eps, None)
    q = np.clip(q / max(q.sum(), eps), eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def js_divergence(expected: dict[str, float], actual: dict[str, float]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two label distributions given as counts."""
    labels = sorted(set(expected) | set(actual))
    p = np.array([expected.get(k, 0.0) for k in labels], dtype=float)
    q = np.array([actual.get(k, 0.0) for k in labels], dtype=float)
    if p.sum() == 0 or q.sum() == 0:
        return 0.0
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / b[mask])))

    return max(0.0, min(1.0, (kl(p, m) + kl(q, m)) / 2))


@dataclass
class MonitorStats:
    """Everything seen so far by an inference monitor."""

    confidences: list[float] = field(default_factory=list)
    predictions: Counter = field(default_factory=Counter)
    correct: int = 0
    labeled: int = 0
    seconds: float = 0.0
    batch_ms: list[float] = field(default_factory=list)

    def add(self, predictions: list[str], confidences: list[float], correct: list[bool | None], seconds: float) -> None:
        """Record one batch: its predictions, their confidences, correctness where labels are known, its time."""
        self.predictions.update(predictions)
        self.confidences.extend(confidences)
        known = [c for c in correct if c is not None]
        self.correct += sum(known)
        self.labeled += len(known)
        self.seconds += seconds
        self.batch_ms.append(seconds * 1000.0)

    @property
    def samples(self) -> int:
        """Number of samples seen."""
        return len(self.confidences)

    def metrics(self) -> dict[str, float]:
        """The running ``monitor/*`` metrics (the seed's names)."""
        n = max(self.samples, 1)
        out = {
            "monitor/samples": float(self.samples),
            "monitor/avg_confidence": float(np.mean(self.confidences)) if self.confidences else 0.0,
            "monitor/avg_inference_time_ms": self.seconds * 1000.0 / n,
            "monitor/throughput_samples_per_sec": self.samples / self.seconds if self.seconds > 0 else 0.0,
        }
        if self.labeled:
            out["monitor/accuracy"] = self.correct / self.labeled
        return out

    def histogram(self) -> list[int]:
        """Counts of confidences in ten bins over [0, 1]."""
        return np.histogram(np.clip(self.confidences, 0.0, 1.0), bins=CONFIDENCE_BINS)[0].astype(int).tolist()

    def report(self, reference: dict[str, Any] | None, psi_threshold: float, js_threshold: float) -> dict[str, Any]:
        """The JSON report; with a reference, drift scores and whether drift was detected."""
        batch_ms = np.asarray(self.batch_ms) if self.batch_ms else np.zeros(1)
        report: dict[str, Any] = {
            "metrics": self.metrics(),
            "latency_ms_per_batch": {
                "p50": float(np.percentile(batch_ms, 50)),
                "p95": float(np.percentile(batch_ms, 95)),
            },
            "prediction_distribution": dict(sorted(self.predictions.items())),
            "confidence_histogram": {"bins": CONFIDENCE_BINS.round(2).tolist(), "counts": self.histogram()},
        }
        if reference is not None:
            score = psi(reference["confidence_histogram"]["counts"], report["confidence_histogram"]["counts"])
            js = js_divergence(reference["prediction_distribution"], report["prediction_distribution"])
            report["metrics"]["monitor/drift_score"] = score
            report["metrics"]["monitor/prediction_drift_js"] = js
            report["drift"] = {
                "confidence_psi": score,
                "prediction_js": js,
                "psi_threshold": psi_threshold,
                "js_threshold": js_threshold,
                "detected": bool(score > psi_threshold or js > js_threshold),
            }
        return report


def observe(outputs: Any, labels: Any, score_threshold: float) -> tuple[list[str], list[float], list[bool | None]]:
    """Predictions, confidences and correctness of one predict batch, for classifiers and detectors.

    A classifier's output (``class_name``, ``class_index``, ``confidence`` per image) is compared
    with the batch's labels where they are >= 0. A detector's output (``scores`` per image) counts
    as "N detections" with the top score as confidence (0 for an image without detections).
    """
    predictions, confidences, correct = [], [], []
    label_list = labels.tolist() if hasattr(labels, "tolist") else list(labels or [])
    for i, item in enumerate(outputs or []):
        if "confidence" in item:
            predictions.append(str(item["class_name"]))
            confidences.append(float(item["confidence"]))
            label = label_list[i] if i < len(label_list) and isinstance(label_list[i], int) else -1
            correct.append(None if label < 0 else bool(item["class_index"] == label))
        else:
            scores = item["scores"]
            kept = int((scores >= score_threshold).sum())
            predictions.append(f"{kept} detections")
            confidences.append(float(scores.max()) if len(scores) else 0.0)
            correct.append(None)
    return predictions, confidences, correct
