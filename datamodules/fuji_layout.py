"""Where the splits of an instance-segmentation data set are on disk, and how each is read into samples.

Explicit paths (an annotation file or folder, and an image folder, per split) win; otherwise the first
of these layouts found under the data root is used:

* Fuji-SfM as downloaded: ``1-Mask-set/{training,validation}_images_and_annotations/``, images and one
  VIA CSV per image (``mask_<image stem>.csv``);
* the original Fuji project: ``trainingset/`` and ``testset/``, each ``annotations.json`` (COCO) beside
  ``JPEGImages/``; ``testset`` is the validation and the test split, as that project used it;
* CVAT's COCO export: ``annotations/instances_<subset>.json`` + ``images/`` (or ``images/<subset>/``),
  and COCO 2017: ``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/``;
* Roboflow's COCO export: ``{train,valid,test}/_annotations.coco.json`` beside the images;
* a COCO file ``annotations.json`` beside ``images/`` (or the images), at the root or per split folder;
* VIA exports (CSV or JSON, one per folder or one per image) beside the images, at the root or per
  split folder.

Split folders may be named ``train``/``training``, ``val``/``valid``/``validation``, ``test``/``testing``.
Splits the layout lacks are held out from training, seeded.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datamodules.coco import read_coco
from datamodules.instance_data import Sample
from datamodules.via import AnnotationError, is_via_export
from datamodules.via_samples import IMAGE_SUFFIXES, read_via_samples, via_exports

Format = Literal["auto", "via", "coco"]
SPLITS = ("train", "val", "test")
ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
VIA_SPLIT_FOLDERS = {"train": "training_images_and_annotations", "val": "validation_images_and_annotations"}
COCO_FILE = "annotations.json"

FUJI_SFM_HELP = (
    "download Fuji-SfM (Gené-Mola et al., Data in Brief 2020, CC BY-NC-SA 4.0) and unpack it so that "
    "{root}/1-Mask-set/training_images_and_annotations/ holds the images and their mask_*.csv files, point "
    "data.root at another supported layout, or name the files with data.train_annotations and "
    "data.train_images; for a try-out without data use configs/demo/fuji_cpu.yaml, which writes a synthetic "
    "orchard"
)


@dataclass(frozen=True)
class SplitSource:
    """One split on disk: VIA exports (a file or a folder of them) or a COCO file, and the image folder."""

    format: Literal["via", "coco"]
    path: Path
    image_dir: Path


@dataclass(frozen=True)
class Layout:
    """The splits found and the name of the layout they were found in."""

    name: str
    splits: dict[str, SplitSource]


def split_of(name: str) -> str | None:
    """The split a folder or subset name stands for (``valid`` -> ``val``, ``train2017`` -> ``train``)."""
    base = re.sub(r"\d+$", "", name.lower())
    return next((split for split, names in ALIASES.items() if base in names), None)


def _fuji_sfm(root: Path) -> dict[str, SplitSource]:
    for base in (root / "1-Mask-set", root):
        folders = {split: base / name for split, name in VIA_SPLIT_FOLDERS.items()}
        if folders["train"].is_dir():
            return {split: SplitSource("via", f, f) for split, f in folders.items() if f.is_dir()}
    return {}


def _original_project(root: Path) -> dict[str, SplitSource]:
    found = {}
    for folder, splits in (("trainingset", ("train",)), ("testset", ("val", "test"))):
        if (root / folder / COCO_FILE).is_file():
            images = root / folder / "JPEGImages"
            image_dir = images if images.is_dir() else root / folder
            for split in splits:
                found[split] = SplitSource("coco", root / folder / COCO_FILE, image_dir)
    return found


def _instances_files(root: Path) -> dict[str, SplitSource]:
    """CVAT (``instances_default.json`` + ``images/``) and COCO 2017 (``instances_train2017.json`` + ``train2017/``)."""
    found = {}
    for path in sorted((root / "annotations").glob("instances_*.json")):
        subset = path.stem.removeprefix("instances_")
        split = "train" if subset.lower() == "default" else split_of(subset)
        candidates = (root / subset, root / "images" / subset, root / "images")
        image_dir = next((c for c in candidates if c.is_dir()), None)
        if split is not None and image_dir is not None and split not in found:
            found[split] = SplitSource("coco", path, image_dir)
    return found


def _roboflow(root: Path) -> dict[str, SplitSource]:
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        split = split_of(folder.name)
        if split and split not in found and (folder / "_annotations.coco.json").is_file():
            found[split] = SplitSource("coco", folder / "_annotations.coco.json", folder)
    return found


def _per_folder(root: Path, source: Callable[[Path], SplitSource | None]) -> dict[str, SplitSource]:
    found = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        split = split_of(folder.name)
        if split and split not in found and (found_here := source(folder)) is not None:
            found[split] = found_here
    if "train" not in found and (single := source(root)) is not None:
        return {"train": single}
    return found


def _coco_source(folder: Path) -> SplitSource | None:
    if not (folder / COCO_FILE).is_file():
        return None
    images = folder / "images"
    return SplitSource("coco", folder / COCO_FILE, images if images.is_dir() else folder)


def _via_source(folder: Path) -> SplitSource | None:
    has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
    return SplitSource("via", folder, folder) if has_images and via_exports(folder) else None


#: (name, formats, what is looked for, finder), in the order they are tried.
LAYOUTS = (
    ("Fuji-SfM", ("via",), "1-Mask-set/training_images_and_annotations/ (Fuji-SfM)", _fuji_sfm),
    ("original project", ("coco",), "trainingset/annotations.json + trainingset/JPEGImages/", _original_project),
    ("CVAT / COCO 2017", ("coco",), "annotations/instances_<subset>.json + images/ or <subset>/", _instances_files),
    ("Roboflow", ("coco",), "{train,valid,test}/_annotations.coco.json", _roboflow),
    ("COCO", ("coco",), f"{COCO_FILE} (+ images/) at the root or in train/, val/, test/",
     lambda r: _per_folder(r, _coco_source)),
    ("VIA", ("via",), "*.csv / *.json VIA exports beside images, at the root or in train/, val/, test/",
     lambda r: _per_folder(r, _via_source)),
)  # fmt: skip


def _explicit_source(split: str, annotations: Path, images: Path | None) -> SplitSource:
    key = f"data.{split}_annotations"
    if not annotations.exists():
        raise FileNotFoundError(f"{key}={annotations} does not exist: point it at a COCO JSON or VIA export.")
    if images is not None and not images.is_dir():
        raise FileNotFoundError(f"data.{split}_images={images} is not a folder: point it at the split's images.")
    if annotations.is_dir():
        return SplitSource("via", annotations, images or annotations)
    is_coco = annotations.suffix.lower() == ".json" and not is_via_export(annotations)
    default = annotations.parent / ("images" if (annotations.parent / "images").is_dir() and is_coco else "")
    return SplitSource("coco" if is_coco else "via", annotations, images or default)


def find_layout(
    root: Path, fmt: Format = "auto", explicit: dict[str, tuple[Path | None, Path | None]] | None = None
) -> Layout:
    """Find the splits: explicit paths first, then the first layout under ``root`` with a training split.

    Args:
        root: The data root.
        fmt: ``via`` or ``coco`` to try only that format's layouts.
        explicit: Per split, ``(annotation file or folder, image folder)``; either may be ``None``.

    Raises:
        FileNotFoundError: Nothing found; the message lists every layout looked for.

    """
    given = {
        split: _explicit_source(split, annotations, images)
        for split, (annotations, images) in (explicit or {}).items()
        if annotations is not None
    }
    if "train" in given:
        return Layout("explicit paths", given)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist: " + FUJI_SFM_HELP.format(root=root) + ".")
    for name, formats, _, finder in LAYOUTS:
        if fmt in ("auto", *formats) and "train" in (found := finder(root)):
            return Layout(name if not given else f"{name} + explicit paths", {**found, **given})
    looked_for = "; ".join(f"{root}/{what}" for _, formats, what, _ in LAYOUTS if fmt in ("auto", *formats))
    raise FileNotFoundError(
        f"data.root={root} has no {'' if fmt == 'auto' else fmt + ' '}data set with a training split (looked for "
        f"{looked_for}): " + FUJI_SFM_HELP.format(root=root) + "."
    )


def find_splits(root: Path, fmt: Format = "auto") -> dict[str, SplitSource]:
    """The splits of the layout under ``root`` (see :func:`find_layout`)."""
    return find_layout(root, fmt).splits


def source_files(source: SplitSource) -> list[Path]:
    """Every image and annotation file of one split on disk, readable or not."""
    folder = source.image_dir
    listed = folder.iterdir() if folder.is_dir() else []
    images = [p for p in listed if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    annotations = via_exports(source.path) if source.format == "via" else [source.path]
    return sorted(images) + sorted(annotations)


def read_split(
    source: SplitSource, class_names: list[str], class_attribute: str | None = None
) -> tuple[list[Sample], list[str]]:
    """Read one split into samples and problems."""
    try:
        if source.format == "via":
            return read_via_samples(source.path, source.image_dir, class_names, class_attribute)
        return read_coco(source.path, source.image_dir, class_names)
    except AnnotationError as err:
        return [], [str(err)]


def hold_out(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (kept, held out): a seeded ``fraction``, at least one when ``fraction > 0``."""
    if fraction <= 0 or len(samples) < 2:
        return samples, []
    order = sorted(samples, key=lambda s: str(s.image))
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(len(order) * fraction)))
    held = sorted(order[:count], key=lambda s: str(s.image))
    kept = sorted(order[count:], key=lambda s: str(s.image))
    return kept, held
