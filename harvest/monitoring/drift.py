"""Drift of a set of predictions from a reference (the validation split's profile, or an earlier report).

Metrics (all from scipy; the thresholds are :class:`DriftThresholds`' defaults):

- ``monitor/drift_score``: the original project's name, the Kullback-Leibler divergence (nats) of
  the current predicted-class distribution from the reference's (``scipy.stats.entropy``), both
  smoothed with half a count per category so a class never predicted gives a finite value. A
  classifier's categories are its classes; a detector's are the numbers of detections per image.
  Drift above 0.5.
- ``monitor/prediction_drift_js``: the Jensen-Shannon divergence (base 2, in [0, 1]) of the same
  distributions (``scipy.spatial.distance.jensenshannon`` squared); reported, not a verdict.
- ``monitor/confidence_drift_ks`` / ``monitor/confidence_drift_pvalue``: the two-sample
  Kolmogorov-Smirnov test of the confidences (``scipy.stats.ks_2samp``). Drift below p = 0.01.
- ``monitor/confidence_psi``: the population stability index of the ten-bin confidence histograms
  (the symmetrised KL divergence); reported, not a verdict (noisy on small sets).
- ``monitor/embedding_drift_mmd`` / ``monitor/embedding_drift_pvalue``: the squared maximum mean
  discrepancy between the embeddings (RBF kernel, median-distance bandwidth, distances from
  ``scipy.spatial.distance.cdist``) with a seeded permutation test. Drift below p = 0.01.

Small sets give large divergences by chance: the two tests say how surprising a difference is for
the number of images seen, the divergences how large it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.spatial.distance import cdist, jensenshannon
from scipy.stats import entropy, ks_2samp

SMOOTHING = 0.5


@dataclass(frozen=True)
class DriftThresholds:
    """When drift is reported."""

    drift_score: float = 0.5
    pvalue: float = 0.01
    permutations: int = 500


def _aligned(reference: dict[str, Any], current: dict[str, Any]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Both distributions over the union of their categories (reference order first)."""
    ref = dict(zip(reference["labels"], reference["counts"], strict=True))
    cur = dict(zip(current["labels"], current["counts"], strict=True))
    labels = list(ref) + [label for label in cur if label not in ref]
    if labels and all(isinstance(label, int) for label in labels):
        labels = list(range(max(labels) + 1))
    return labels, np.array([ref.get(k, 0) for k in labels], float), np.array([cur.get(k, 0) for k in labels], float)


def kl_drift(reference: dict[str, Any], current: dict[str, Any]) -> float:
    """KL divergence (nats) of the smoothed current distribution from the smoothed reference."""
    _, p_ref, p_cur = _aligned(reference, current)
    return float(entropy(p_cur + SMOOTHING, p_ref + SMOOTHING))


def js_drift(reference: dict[str, Any], current: dict[str, Any]) -> float:
    """Jensen-Shannon divergence (base 2) of the two distributions."""
    _, p_ref, p_cur = _aligned(reference, current)
    if p_ref.sum() == 0 or p_cur.sum() == 0:
        return 0.0
    return float(jensenshannon(p_ref, p_cur, base=2) ** 2)


def psi(expected: list[float], actual: list[float], eps: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins (symmetrised KL divergence)."""
    p = np.clip(np.asarray(expected, float) / max(sum(expected), eps), eps, None)
    q = np.clip(np.asarray(actual, float) / max(sum(actual), eps), eps, None)
    return float(entropy(q, p) + entropy(p, q))


def mmd_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0) -> tuple[float, float]:
    """Squared MMD between samples ``x`` and ``y`` (RBF kernel, median heuristic) and its permutation p-value."""
    both = np.concatenate([x, y]).astype(np.float64)
    distances = cdist(both, both, "sqeuclidean")
    positive = distances[distances > 0]
    bandwidth = float(np.median(positive)) if len(positive) else 1.0
    kernel = np.exp(-distances / bandwidth)
    n = len(x)

    def statistic(order: np.ndarray) -> float:
        k = kernel[np.ix_(order, order)]
        return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())

    observed = statistic(np.arange(len(both)))
    rng = np.random.default_rng(seed)
    exceed = sum(statistic(rng.permutation(len(both))) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


def drift_report(
    reference: dict[str, Any],
    current: dict[str, Any],
    reference_embeddings: np.ndarray | None = None,
    current_embeddings: np.ndarray | None = None,
    thresholds: DriftThresholds = DriftThresholds(),  # noqa: B008 - frozen, never mutated
) -> dict[str, Any]:
    """Drift metrics of ``current`` against ``reference`` (both :meth:`MonitorStats.summary` dicts).

    Returns:
        ``metrics`` (the ``monitor/*`` values), ``detected``, ``reasons`` and the ``thresholds``.

    """
    ref, cur = reference["prediction_distribution"], current["prediction_distribution"]
    metrics = {
        "monitor/drift_score": kl_drift(ref, cur),
        "monitor/prediction_drift_js": js_drift(ref, cur),
        "monitor/confidence_psi": psi(
            reference["confidence_histogram"]["counts"], current["confidence_histogram"]["counts"]
        ),
    }
    reasons = []
    if metrics["monitor/drift_score"] > thresholds.drift_score:
        reasons.append(f"prediction distribution: KL {metrics['monitor/drift_score']:.3f} > {thresholds.drift_score}")
    if reference.get("confidences") and current.get("confidences"):
        test = ks_2samp(reference["confidences"], current["confidences"])
        metrics["monitor/confidence_drift_ks"] = float(test.statistic)
        metrics["monitor/confidence_drift_pvalue"] = float(test.pvalue)
        if test.pvalue < thresholds.pvalue:
            reasons.append(f"confidence: KS {test.statistic:.3f}, p = {test.pvalue:.2g} < {thresholds.pvalue}")
    if reference_embeddings is not None and current_embeddings is not None and len(current_embeddings) > 1:
        mmd, pvalue = mmd_test(reference_embeddings, current_embeddings, thresholds.permutations)
        metrics["monitor/embedding_drift_mmd"], metrics["monitor/embedding_drift_pvalue"] = mmd, pvalue
        if pvalue < thresholds.pvalue:
            reasons.append(f"embeddings: MMD² {mmd:.4f}, p = {pvalue:.2g} < {thresholds.pvalue}")
    return {"metrics": metrics, "detected": bool(reasons), "reasons": reasons, "thresholds": asdict(thresholds)}
