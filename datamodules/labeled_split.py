"""Seeded, stratified choices of images: the labeled fraction, and validation images held out of train."""

from __future__ import annotations

from typing import Any

import numpy as np


def stratified_choice(
    labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 1, keep_per_class: int = 0
) -> np.ndarray:
    """Choose ``fraction`` of the items of every class; return the boolean mask.

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


def make_split(
    paths: list[str], labels: np.ndarray, labeled_ratio: float, val_fraction: float | None, seed: int
) -> dict[str, Any]:
    """Make the labeled/unlabeled split of training images, as plain data (JSON- and checkpoint-safe).

    Args:
        paths: Training images (relative paths), in a fixed order.
        labels: Their class indices.
        labeled_ratio: Fraction of each class that keeps its label (at least one image per class).
        val_fraction: Fraction of each class first held out for validation; ``None`` when the data set
            has its own validation split.
        seed: Seed of both choices.

    Returns:
        ``seed``, ``labeled_ratio``, ``val_fraction``, ``val_from_train`` (held-out paths) and
        ``labeled`` (paths).

    """
    labels = np.asarray(labels)
    held_out = np.zeros(len(labels), dtype=bool)
    if val_fraction is not None:
        held_out = stratified_choice(labels, val_fraction, seed + 1, min_per_class=1, keep_per_class=1)
    rest = np.flatnonzero(~held_out)
    labeled = rest[stratified_choice(labels[rest], labeled_ratio, seed, min_per_class=1)]
    return {
        "seed": seed,
        "labeled_ratio": labeled_ratio,
        "val_fraction": val_fraction,
        "val_from_train": [paths[i] for i in np.flatnonzero(held_out)],
        "labeled": [paths[i] for i in labeled],
    }
