"""Unlabeled training images for FixMatch: a weak and a strong view of each image, its true label for reporting."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.transforms import v2

from datamodules.image_folder import IMAGENET_MEAN, IMAGENET_STD, ImageDataset


def strong_transform(
    image_size: int,
    crop_scale: tuple[float, float],
    augmentations: list[torch.nn.Module],
    num_ops: int = 2,
    magnitude: int = 10,
) -> v2.Compose:
    """The weak view's crop and ``augmentations``, then RandAugment and a random erasing (FixMatch's strong view)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
            *augmentations,
            v2.RandAugment(num_ops=num_ops, magnitude=magnitude),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            v2.RandomErasing(p=1.0, scale=(0.02, 0.15), value=0),
        ]
    )


class TwoViewDataset(ImageDataset):
    """Items ``(weak view, strong view, true class index, path)`` of unlabeled training images.

    The true class (``-1`` when the data set does not know it) is for reporting the accuracy of
    pseudo-labels only; the training loss never reads it. Bad images follow ``on_bad_data`` as in
    :class:`ImageDataset`.
    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        weak: v2.Transform,
        strong: v2.Transform,
        min_size: int | None = None,
        on_bad_data: str = "error",
    ) -> None:
        super().__init__(samples, weak, min_size=min_size, on_bad_data=on_bad_data)
        self.strong = strong

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        image, label, path = self.load(index)
        return self.transform(image), self.strong(image), label, str(path)
