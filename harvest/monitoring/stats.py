"""Numbers of inference monitoring: what a model predicted on a set of images, summarised.

:class:`MonitorStats` collects, per image, the prediction (a class name for a classifier, the number
of detections for a detector), its confidence (the top probability, or the top detection score; 0
without detections), correctness where labels are known, timings, and the image's embedding. Its
:meth:`~MonitorStats.summary` is the statistics part of a reference profile (written at the end
of ``fit`` on the validation split) and of a monitoring report, so either can serve as the
reference that :func:`harvest.monitoring.drift.drift_report` compares a new set of images with.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)
#: Embeddings kept for the drift test (a seeded random subset beyond this many images).
MAX_EMBEDDINGS = 512


@dataclass
class MonitorStats:
    """Everything seen so far by an inference monitor.

    Args:
        kind: ``"classifier"`` or ``"detector"``.
        class_names: The classifier's classes (every one is shown and compared, even when never predicted).

    """

    kind: str = "classifier"
    class_names: list[str] = field(default_factory=list)
    confidences: list[float] = field(default_factory=list)
    predictions: Counter = field(default_factory=Counter)
    correct: int = 0
    labeled: int = 0
    seconds: float = 0.0
    batch_ms: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        predictions: list[Any],
        confidences: list[float],
        correct: list[bool | None],
        seconds: float,
        embeddings: np.ndarray | None = None,
    ) -> None:
        """Record one batch: predictions, confidences, correctness where known, its time and embeddings."""
        self.predictions.update(predictions)
        self.confidences.extend(confidences)
        known = [c for c in correct if c is not None]
        self.correct += sum(known)
        self.labeled += len(known)
        self.seconds += seconds
        self.batch_ms.append(seconds * 1000.0)
        if embeddings is not None and len(embeddings):
            self.embeddings.append(np.asarray(embeddings, dtype=np.float32))

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
        if self.kind == "detector" and self.samples:
            out["monitor/avg_detections"] = sum(k * v for k, v in self.predictions.items()) / self.samples
        if self.labeled:
            out["monitor/accuracy"] = self.correct / self.labeled
        return out

    def distribution(self) -> dict[str, list]:
        """Predictions per category: every class (zero counts too), or 0..max detections per image."""
        if self.kind == "detector":
            labels: list[Any] = list(range(max(self.predictions, default=0) + 1))
        else:
            labels = list(self.class_names) + sorted(str(k) for k in self.predictions if k not in self.class_names)
        return {"labels": labels, "counts": [int(self.predictions.get(label, 0)) for label in labels]}

    def histogram(self) -> list[int]:
        """Counts of confidences in ten bins over [0, 1]."""
        return np.histogram(np.clip(self.confidences, 0.0, 1.0), bins=CONFIDENCE_BINS)[0].astype(int).tolist()

    def embedding_sample(self, seed: int = 0) -> np.ndarray | None:
        """At most :data:`MAX_EMBEDDINGS` embeddings (a seeded subset), or None when none were captured."""
        if not self.embeddings:
            return None
        rows = np.concatenate(self.embeddings)
        if len(rows) > MAX_EMBEDDINGS:
            rows = rows[np.sort(np.random.default_rng(seed).choice(len(rows), MAX_EMBEDDINGS, replace=False))]
        return rows

    def summary(self) -> dict[str, Any]:
        """The statistics a reference profile and a report share (JSON-ready)."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "samples": self.samples,
            "prediction_distribution": self.distribution(),
            "confidence_histogram": {"bins": CONFIDENCE_BINS.round(2).tolist(), "counts": self.histogram()},
            "confidences": [round(c, 6) for c in self.confidences],
        }
        if self.kind == "classifier":
            out["class_names"] = list(self.class_names)
        return out

    def latency(self) -> dict[str, float]:
        """Median and 95th percentile of the batch latency in milliseconds."""
        batch_ms = np.asarray(self.batch_ms) if self.batch_ms else np.zeros(1)
        return {"p50": float(np.percentile(batch_ms, 50)), "p95": float(np.percentile(batch_ms, 95))}


def observe(outputs: Any, labels: Any, score_threshold: float) -> tuple[list[Any], list[float], list[bool | None]]:
    """Predictions, confidences and correctness of one predict batch, for classifiers and detectors.

    A classifier's output (``class_name``, ``class_index``, ``confidence`` per image) is compared
    with the batch's labels where they are >= 0. A detector's output (``scores`` per image) counts
    as its number of detections scoring at least ``score_threshold`` (an int), with the top score as
    confidence (0 for an image without detections).
    """
    predictions: list[Any] = []
    confidences, correct = [], []
    label_list = labels.tolist() if hasattr(labels, "tolist") else list(labels or [])
    for i, item in enumerate(outputs or []):
        if "confidence" in item:
            predictions.append(str(item["class_name"]))
            confidences.append(float(item["confidence"]))
            label = label_list[i] if i < len(label_list) and isinstance(label_list[i], int) else -1
            correct.append(None if label < 0 else bool(item["class_index"] == label))
        else:
            scores = item["scores"]
            predictions.append(int((scores >= score_threshold).sum()))
            confidences.append(float(scores.max()) if len(scores) else 0.0)
            correct.append(None)
    return predictions, confidences, correct
