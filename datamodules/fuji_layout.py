"""Where the splits of an apple data set are on disk, and how each is read into samples.

Two layouts are recognised under the data root:

* Fuji-SfM as downloaded: ``1-Mask-set/training_images_and_annotations/`` and
  ``1-Mask-set/validation_images_and_annotations/``, each holding images ``_MG_xxxx_NN.jpg`` and one VIA
  CSV per image, ``mask__MG_xxxx_NN.csv`` (``mask_`` + the image's stem);
* COCO: ``annotations.json`` beside an ``images/`` folder (or the images themselves), either at the root
  or in ``train/``, ``val/`` and ``test/`` sub-folders.

Splits the layout lacks (Fuji-SfM has no test split) are held out from training, seeded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from datamodules.coco import read_coco
from datamodules.instance_data import Instance, Sample, checked_polygon, image_size
from datamodules.via import AnnotationError, ViaRegion, read_via_csv

Format = Literal["auto", "via", "coco"]
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VIA_SPLIT_FOLDERS = {"train": "training_images_and_annotations", "val": "validation_images_and_annotations"}
COCO_FILE = "annotations.json"

FUJI_SFM_HELP = (
    "download Fuji-SfM (Gené-Mola et al., Data in Brief 2020, CC BY-NC-SA 4.0) and unpack it so that "
    "{root}/1-Mask-set/training_images_and_annotations/ holds the images and their mask_*.csv files, or set "
    "data.root to a COCO export (a folder with annotations.json); for a try-out without data use "
    "configs/demo/fuji_cpu.yaml, which writes a synthetic orchard"
)


@dataclass(frozen=True)
class SplitSource:
    """One split on disk: a folder of images with VIA CSVs, or a COCO file and its image folder."""

    format: Literal["via", "coco"]
    path: Path
    image_dir: Path


def _via_base(root: Path) -> Path | None:
    for base in (root / "1-Mask-set", root):
        if (base / VIA_SPLIT_FOLDERS["train"]).is_dir():
            return base
    return None


def _coco_source(folder: Path) -> SplitSource | None:
    if not (folder / COCO_FILE).is_file():
        return None
    images = folder / "images"
    return SplitSource("coco", folder / COCO_FILE, images if images.is_dir() else folder)


def find_splits(root: Path, fmt: Format = "auto") -> dict[str, SplitSource]:
    """Find the splits under ``root`` (at least ``train``); raise ``FileNotFoundError`` saying what to do."""
    if not root.is_dir():
        raise FileNotFoundError(f"data.root={root} does not exist: " + FUJI_SFM_HELP.format(root=root) + ".")
    if fmt in ("auto", "via") and (base := _via_base(root)) is not None:
        folders = {split: base / name for split, name in VIA_SPLIT_FOLDERS.items()}
        return {split: SplitSource("via", f, f) for split, f in folders.items() if f.is_dir()}
    if fmt in ("auto", "coco"):
        per_split = {split: _coco_source(root / split) for split in SPLITS}
        found = {split: source for split, source in per_split.items() if source is not None}
        if "train" in found:
            return found
        if (single := _coco_source(root)) is not None:
            return {"train": single}
    expected = {
        "via": f"{root}/1-Mask-set/{VIA_SPLIT_FOLDERS['train']}/",
        "coco": f"{root}/{COCO_FILE} or {root}/train/{COCO_FILE}",
        "auto": f"{root}/1-Mask-set/{VIA_SPLIT_FOLDERS['train']}/ (Fuji-SfM) or {root}/{COCO_FILE} (COCO)",
    }[fmt]
    raise FileNotFoundError(
        f"data.root={root} has no {'' if fmt == 'auto' else fmt + ' '}data set: expected {expected}; "
        + FUJI_SFM_HELP.format(root=root)
        + "."
    )


def read_via_folder(folder: Path, label: int = 1) -> tuple[list[Sample], list[str]]:
    """Read a folder of images and VIA CSVs into samples, and problems as messages (those images left out).

    Every region is an instance of class ``label``. An image needs annotations (a CSV naming it); an image
    whose CSV has no regions is a negative sample.
    """
    problems: list[str] = []
    annotated: dict[Path, tuple[Path, list[ViaRegion]]] = {}
    unreadable: set[str] = set()  # stems of images whose CSV failed: reported once, as the CSV's problem
    for csv_path in sorted(folder.glob("*.csv")):
        try:
            per_image = read_via_csv(csv_path)
        except AnnotationError as err:
            problems.append(str(err))
            unreadable.add(csv_path.stem.removeprefix("mask_"))
            continue
        for filename, regions in per_image.items():
            image = folder / filename
            if image in annotated:
                problems.append(
                    f"{csv_path}: {filename} is also annotated in {annotated[image][0].name}: keep one."
                )
            annotated[image] = (csv_path, regions)
    samples: list[Sample] = []
    for image, (csv_path, regions) in sorted(annotated.items()):
        if not image.is_file():
            problems.append(
                f"{csv_path}: names image {image.name}, which is missing: restore it or delete the CSV."
            )
            continue
        try:
            width, height = image_size(image)
            instances = [
                Instance(label, [checked_polygon(r.polygon, width, height, r.where)]) for r in regions
            ]
        except AnnotationError as err:
            problems.append(str(err))
            continue
        samples.append(Sample(image, csv_path, width, height, instances))
    for image in sorted(folder.iterdir()):
        if image.suffix.lower() in IMAGE_SUFFIXES and image not in annotated and image.stem not in unreadable:
            problems.append(
                f"{image}: no annotations (expected {folder / ('mask_' + image.stem + '.csv')}): annotate "
                "it in VIA (no regions = an image without apples) or move it out of the folder."
            )
    return samples, problems


def source_files(source: SplitSource) -> list[Path]:
    """Every image and annotation file of one split on disk, readable or not."""
    images = [p for p in source.image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    annotations = sorted(source.path.glob("*.csv")) if source.format == "via" else [source.path]
    return sorted(images) + annotations


def read_split(source: SplitSource, class_names: list[str]) -> tuple[list[Sample], list[str]]:
    """Read one split into samples and problems."""
    if source.format == "via":
        return read_via_folder(source.path, label=1)
    try:
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
