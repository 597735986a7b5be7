"""The reference profile: what a model predicted on its validation split, the baseline of monitoring.

Written at the end of ``fit`` by :class:`callbacks.reference_profile.ReferenceProfile` into the run
directory (``reference_profile.json``: class prior, predicted-class distribution, confidences and
their histogram, embedding statistics; ``reference_embeddings.npz``: a sample of the embeddings
with their per-dimension mean and standard deviation) and carried in every registered package, so
``harvest monitor NAME@ALIAS --images DIR`` measures drift without an earlier monitor run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from harvest.monitoring.stats import MonitorStats
from harvest.runs.directory import write_json_atomic

PROFILE = "reference_profile.json"
EMBEDDINGS = "reference_embeddings.npz"


def write_profile(folder: Path, stats: MonitorStats, **about: Any) -> Path:
    """Write ``stats`` as the reference profile in ``folder`` (with ``about``: split, class prior…)."""
    folder.mkdir(parents=True, exist_ok=True)
    profile = {**about, **stats.summary()}
    sample = stats.embedding_sample()
    if sample is not None:
        np.savez_compressed(
            folder / EMBEDDINGS, sample=sample.astype(np.float32), mean=sample.mean(0), std=sample.std(0)
        )
        profile["embeddings"] = {"file": EMBEDDINGS, "rows": int(len(sample)), "dim": int(sample.shape[1])}
        profile["embeddings"]["mean_norm"] = float(np.linalg.norm(sample, axis=1).mean())
    write_json_atomic(folder / PROFILE, profile)
    return folder / PROFILE


def read_reference(path: Path) -> tuple[dict[str, Any], np.ndarray | None]:
    """A reference profile (or an earlier monitoring report) and its embedding sample, if it has one.

    Raises:
        ValueError: ``path`` is not a profile or report; the message names it and the fix.

    """
    try:
        reference = json.loads(Path(path).read_text())
        usable = isinstance(reference["confidence_histogram"]["counts"], list) and isinstance(
            reference["prediction_distribution"]["labels"], list
        )
    except KeyError as error:
        usable, reference = False, f"no key {error}"
    except (OSError, ValueError, TypeError) as error:
        usable, reference = False, str(error)
    if not usable:
        raise ValueError(
            f"reference={path}: not a reference profile or monitoring report ({reference}); pass the "
            f"{PROFILE} of a training run or the monitoring_report.json of an earlier `harvest monitor`."
        )
    embeddings = None
    stored = (reference.get("embeddings") or {}).get("file")
    if stored and (Path(path).parent / stored).is_file():
        with np.load(Path(path).parent / stored, allow_pickle=False) as data:
            embeddings = data["sample"]
    return reference, embeddings
