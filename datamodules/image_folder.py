"""Image-folder plumbing: listing ``<split>/<class>/*.jpg``, probing files, the dataset, transforms."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import v2

from harvest.errors import first_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BadImageError(ValueError):
    """An image file that cannot be decoded."""


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


def _decode(path: Path, min_size: int | None = None) -> Image.Image:
    with Image.open(path) as image:
        if min_size and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))  # decode big JPEGs at a reduced scale: much faster
        return image.convert("RGB")


def probe_image(path: Path) -> str | None:
    """Why ``path`` cannot be used as an image, or ``None`` when it decodes."""
    try:
        _decode(path, min_size=16)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        return first_line(error)
    return None


def unreadable_images(files: dict[str, dict[str, list[Path]]]) -> list[tuple[Path, str]]:
    """Every image of ``files`` (split -> class -> paths) that does not decode, with the reason."""
    return [
        (p, why)
        for classes in files.values()
        for images in classes.values()
        for p in images
        if (why := probe_image(p))
    ]


def bad_image_message(path: Path, why: str) -> str:
    """One line naming an unreadable image, the reason and the fix."""
    return (
        f"{path}: cannot read image ({why}); replace or delete the file, "
        "or set data.init_args.on_bad_data: skip to leave such files out."
    )


def read_image(path: Path, min_size: int | None = None) -> Image.Image:
    """Decode ``path`` as RGB; a file that cannot be decoded raises a one-line :class:`BadImageError`."""
    try:
        return _decode(path, min_size)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
        raise BadImageError(
            bad_image_message(path, first_line(error))
        ) from error


class ImageDataset(Dataset):
    """Images with class indices; items are ``(image tensor, class index, path string)``.

    Args:
        samples: ``(path, class index)`` pairs; the index is ``-1`` when unknown.
        transform: Applied to the decoded PIL image.
        min_size: Smallest side worth decoding (JPEGs are decoded at a reduced scale down to it).

    """

    def __init__(
        self, samples: list[tuple[Path, int]], transform: v2.Transform, min_size: int | None = None
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.min_size = min_size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        path, label = self.samples[index]
        return self.transform(read_image(path, self.min_size)), label, str(path)


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
