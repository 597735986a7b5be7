"""Seeded, stratified choices of images: the labeled fraction, and validation images held out of train."""

from __future__ import annotations

import numpy as np


def stratified_choice(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 1, keep_per_class: int = 0) -> np.ndarray:
    """A boolean mask choosing ``fraction`` of the items of every class.

    Each class gets ``round(fraction * n)`` items, at least ``min_per_class`` and at most
    ``n - keep_per_class``; which ones is decided by ``seed`` alone, class by class, so the choice
    for one class does not change when another class gains images.

    Args:
        labels: Class index of every item.
        fraction: Fraction of each class to choose, in ``[0, 1]``.
        seed: Seed of the choice.
        min_per_class: Smallest number chosen from a class.
        keep_per_class: Number of items of each class that are never chosen.

    Returns:
        Mask over ``labels``.
    """
    labels = np.asarray(labels)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        count = int(round(fraction * len(members)))
        count = min(max(count, min_per_class), len(members) - keep_per_class)
        if count > 0:
            rng = np.random.default_rng([seed, int(cls)])
            mask[rng.choice(members, size=count, replace=False)] = True
    return mask
