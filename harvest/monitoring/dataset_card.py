"""Data versioning: a data set's card (content hash, counts, imbalance, samples) and its quality check.

Works on any data module with the Harvest data contract: ``describe()``, ``dataset_files()``,
``sample_images(per_class)`` and ``check()``. The content hash covers every file the module reads
(images and annotations), by path relative to the data set's root and by content, so the same
hash in two runs means the same data wherever it lies on disk.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from harvest.core.image_io import BadImageError, read_rgb
from harvest.runs.directory import sha256_file

log = logging.getLogger(__name__)

def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.name


def file_digests(files: list[Path], root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every file, sorted by path."""
    return dict(sorted((_relative(path, root), sha256_file(path)) for path in files))


def content_hash(digests: dict[str, str]) -> str:
    """One SHA-256 over every (relative path, file hash) pair: renaming, adding or changing a file changes it.

    Args:
        digests: ``{relative path: file sha256}`` (:func:`file_digests`).

    """
    digest = hashlib.sha256()
    for name, file_hash in sorted(digests.items()):
        digest.update(f"{name}\0{file_hash}\n".encode())
    return digest.hexdigest()


def imbalance(per_class: dict[str, int]) -> dict[str, Any]:
    """Largest over smallest class count (``inf`` when a class is empty), with both classes named."""
    if not per_class:
        return {"ratio": None, "largest": None, "smallest": None}
    largest = max(per_class, key=per_class.__getitem__)
    smallest = min(per_class, key=per_class.__getitem__)
    ratio = per_class[largest] / per_class[smallest] if per_class[smallest] else float("inf")
    return {"ratio": round(ratio, 3), "largest": largest, "smallest": smallest}


def build_card(datamodule: Any) -> dict[str, Any]:
    """The data set's card: the module's ``describe()`` plus content hash, file count, size and imbalance.

    Deterministic for the same data (no timestamps, no absolute paths in the hashed parts), so a
    tracker that versions by content (W&B artifacts) finds the same version again.
    """
    description = dict(datamodule.describe())
    root = Path(description.get("root") or ".")
    files = list(datamodule.dataset_files())
    digests = file_digests(files, root)
    splits = description.get("splits", {})
    train = splits.get("train") or next(iter(splits.values()), {})
    card = {
        "name": description.get("name") or root.name,
        "pipeline": getattr(datamodule, "pipeline", None),
        "content_hash": content_hash(digests),
        "files": len(digests),
        "bytes": sum(os.path.getsize(p) for p in files),
        "num_classes": len(description.get("class_names", [])),
        "class_imbalance": imbalance(train.get("per_class", {})),
    }
    card.update({k: v for k, v in description.items() if k not in card})
    return card


def short_hash(card: dict[str, Any]) -> str:
    """The first 12 hex digits of the content hash, for names and tags."""
    return str(card["content_hash"])[:12]


#: Pixels above the rows of a sample grid, for its title.
GRID_TITLE_HEIGHT = 20


def sample_grid(
    samples: dict[str, list[Path]], path: Path, thumb: int = 96, title: str = "Sample images per class"
) -> Path:
    """A PNG grid under a title, with one row of sample thumbnails per class, the class name on the left.

    Images are decoded as training sees them (:func:`harvest.core.image_io.read_rgb`); one that no longer
    decodes is left blank and named in the log (the grid never stops a run).
    """
    rows = [(name, images) for name, images in samples.items()]
    columns = max((len(images) for _, images in rows), default=1) or 1
    label_width = 110
    size = (label_width + columns * (thumb + 4), GRID_TITLE_HEIGHT + max(1, len(rows)) * (thumb + 4))
    grid = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), title, fill="black")
    for row, (name, images) in enumerate(rows):
        top = GRID_TITLE_HEIGHT + row * (thumb + 4)
        draw.text((4, top + thumb // 2 - 6), name[:16], fill="black")
        for column, image_path in enumerate(images):
            try:
                image = read_rgb(image_path, min_side=thumb).image
            except BadImageError as error:
                log.warning("Sample grid: %s left blank: %s", image_path, error.reason)
                continue
            image.thumbnail((thumb, thumb))
            grid.paste(image, (label_width + column * (thumb + 4), top))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


@dataclass(frozen=True)
class Finding:
    """One quality finding: ``error`` (the data set is not usable as is) or ``warning``."""

    severity: str
    message: str


def duplicates(digests: dict[str, str]) -> list[Finding]:
    """Files with the same content: an error across folders (a split leak or two labels), else a warning."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, file_hash in digests.items():
        groups[file_hash].append(name)
    findings = []
    for names in groups.values():
        if len(names) < 2:
            continue
        folders = {str(Path(n).parent) for n in names}
        where = (
            "in different folders (a split leak or conflicting labels)"
            if len(folders) > 1
            else "in one folder"
        )
        severity = "error" if len(folders) > 1 else "warning"
        findings.append(
            Finding(severity, f"{len(names)} identical files {where}: {', '.join(names)}; keep one of them.")
        )
    return findings


def conversion_warnings(conversions: dict[str, tuple[str, ...]], examples: int = 3) -> list[Finding]:
    """One warning per kind of conversion an image needed to become RGB, naming a few of the files.

    Args:
        conversions: ``{image path: conversions}`` as the data modules record them during a check.
        examples: Files named per warning.

    """
    by_kind: dict[str, list[str]] = defaultdict(list)
    for path, done in sorted(conversions.items()):
        for kind in done:
            by_kind["EXIF orientation applied" if kind.startswith("EXIF") else kind].append(path)
    findings = []
    for kind, paths in sorted(by_kind.items()):
        more = f" and {len(paths) - examples} more" if len(paths) > examples else ""
        findings.append(
            Finding(
                "warning",
                f"{', '.join(paths[:examples])}{more}: converted on reading ({kind}; {len(paths)} image(s)); "
                "training sees the converted, upright RGB image; save them as plain 8-bit RGB to silence this.",
            )
        )
    return findings


def check_dataset(datamodule: Any, max_imbalance: float = 10.0) -> list[Finding]:
    """Quality check of a data set.

    Findings: the module's own (unreadable images, annotation errors, missing or empty classes),
    duplicate files by content hash, empty classes and class imbalance above ``max_imbalance``.
    """
    findings = [Finding("error", problem) for problem in datamodule.check()]
    findings += conversion_warnings(getattr(datamodule, "conversions", {}))
    root = Path(getattr(datamodule, "root", "."))
    findings += duplicates(file_digests(list(datamodule.dataset_files()), root))
    if any(f.severity == "error" for f in findings):
        return findings  # describe() needs a usable data set
    description = datamodule.describe()
    for split, counts in description.get("splits", {}).items():
        for name, count in counts.get("per_class", {}).items():
            if count == 0:
                findings.append(
                    Finding("error", f"{root}: class '{name}' has no images in split '{split}'; add images.")
                )
        balance = imbalance(counts.get("per_class", {}))
        if balance["ratio"] is not None and balance["ratio"] > max_imbalance:
            findings.append(
                Finding(
                    "warning",
                    f"split '{split}': class imbalance {balance['ratio']:.1f} ('{balance['largest']}' over "
                    f"'{balance['smallest']}') exceeds {max_imbalance:g}; rebalance or weight the classes.",
                )
            )
    return findings
