"""Image-folder plumbing: listing ``<split>/<class>/*.jpg``, probing files, the dataset, transforms."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from harvest.core.image_io import BadImageError, check_images, read_rgb

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class folders in ``split_dir`` (hidden folders skipped)."""
    if not split_dir.is_dir():
        return []
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Sorted image files (``.jpg``, ``.jpeg``, ``.png``, any case) in ``folder``."""
    if not folder.is_dir():
        return []
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in pattern
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def scan_splits(root: Path, splits: tuple[str, ...]) -> dict[str, dict[str, list[Path]]]:
    """Image files per present split and class folder, straight from disk."""
    return {
        split: {name: list_images(root / split / name) for name in class_folders(root / split)}
        for split in splits
        if (root / split).is_dir()
    }


def structure_problems(
    root: Path, class_names: list[str], files: dict[str, dict[str, list[Path]]]
) -> list[str]:
    """One-line messages for a missing test split, classes missing from a split, unknown or empty classes."""
    problems = []
    if "test" not in files:
        problems.append(
            f"{root / 'test'}: missing split folder; add test/<class>/ images for every class of train/."
        )
    for split, classes in files.items():
        for name in class_names:
            if name not in classes:
                problems.append(
                    f"{root / split / name}: class '{name}' is missing from split '{split}'; "
                    "add the folder with images, or remove the class from every split."
                )
        for name, images in classes.items():
            if name not in class_names:
                problems.append(
                    f"{root / split / name}: class '{name}' is not in train/; add it there or remove it."
                )
            elif not images:
                problems.append(
                    f"{root / split / name}: empty class (no .jpg/.jpeg/.png files); "
                    "add images or remove the class from every split."
                )
    return problems


def unreadable_images(
    files: dict[str, dict[str, list[Path]]], conversions: dict[str, tuple[str, ...]] | None = None
) -> list[tuple[Path, str]]:
    """Every image of ``files`` (split -> class -> paths) that does not decode, with the reason.

    Every file is decoded (in parallel processes when there are many); what had to be converted to
    make an image RGB is added to ``conversions`` (``{path: conversions}``) when given.
    """
    report = check_images(p for classes in files.values() for images in classes.values() for p in images)
    if conversions is not None:
        conversions.update({str(p): done for p, (_, done) in report.items() if done})
    return [(p, why) for p, (why, _) in report.items() if why]


class ImageDataset(Dataset):
    """Images with class indices; items are ``(image tensor, class index, path string)``.

    Args:
        samples: ``(path, class index)`` pairs; the index is ``-1`` when unknown.
        transform: Applied to the decoded PIL image (upright RGB, see :func:`read_rgb`).
        min_size: Smallest side worth decoding (JPEGs are decoded at a reduced scale down to it).
        on_bad_data: ``"skip"``: an image that stops decoding during the run (it passed the check at the
            start) is named once in the log and replaced by the next one; ``"error"``: raise naming it.

    """

    def __init__(
        self,
        samples: list[tuple[Path, int]],
        transform: v2.Transform,
        min_size: int | None = None,
        on_bad_data: str = "error",
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.min_size = min_size
        self.on_bad_data = on_bad_data
        self.skipped: set[Path] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[Image.Image, int, Path]:
        """Decode image ``index`` (upright RGB) with its class index and path, after ``on_bad_data``."""
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                return read_rgb(path, self.min_size).image, label, path
            except BadImageError as error:
                if self.on_bad_data != "skip":
                    raise
                if path not in self.skipped:
                    self.skipped.add(path)
                    log.warning("Skipping %s (data.on_bad_data: skip): %s", path, error.reason)
        raise BadImageError(f"none of the {len(self.samples)} images of this loader decodes any more.")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        image, label, path = self.load(index)
        return self.transform(image), label, str(path)


def build_transform(
    image_size: int, train: bool, augmentations: list[torch.nn.Module], crop_scale: tuple[float, float]
) -> v2.Compose:
    """Build the transform: random resized crop plus ``augmentations`` for training, else a resize.

    Both end with ImageNet normalisation.
    """
    if train:
        geometry = [v2.RandomResizedCrop(image_size, scale=crop_scale, antialias=True), *augmentations]
    else:
        geometry = [v2.Resize((image_size, image_size), antialias=True)]
    return v2.Compose(
        [
            v2.ToImage(),
            *geometry,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
