"""FujiApplesDataModule: apple instance segmentation from Fuji-SfM, VIA exports or COCO JSON, in any common layout.

Samples follow torchvision's detection contract (image ``float32[3, H, W]`` in [0, 1]; target
``boxes`` xyxy, ``labels``, ``masks uint8[N, H, W]``), sized by ``min_size`` / ``max_size``. Besides the
loaders, the module describes its data (:meth:`describe`, :meth:`check`, :meth:`dataset_files`,
:meth:`sample_images`) for data cards and ``harvest data check``.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only, rank_zero_warn
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import tv_tensors
from torchvision.transforms.v2.functional import pil_to_tensor

from datamodules.coco_truth import EvaluationDataset
from datamodules.detection_transforms import eval_transforms, load_size, train_transforms
from datamodules.fuji_layout import SPLITS, Format, Layout, find_layout, hold_out, read_split, source_files
from datamodules.image_folder import list_images
from datamodules.instance_data import InstanceDataset, Sample, collate_detection, image_size
from datamodules.synthetic_orchard import SyntheticOrchard
from datamodules.via import AnnotationError
from harvest.core.image_io import check_images

log = logging.getLogger(__name__)


def _shown(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` where it lies inside it (cards stay the same wherever the data is)."""
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return str(path)


class DataError(ValueError):
    """The data set has problems and ``on_bad_data`` is ``"error"``."""


class FujiApplesDataModule(pl.LightningDataModule):
    """Fuji apple instance segmentation (Fuji-SfM, a VIA export or a COCO export).

    The layout under ``root`` is detected (Fuji-SfM, the original Fuji project's ``trainingset/`` +
    ``testset/``, CVAT, Roboflow, COCO 2017, ``annotations.json``, VIA exports; see
    :mod:`datamodules.fuji_layout`), or each split's files are named (``train_annotations`` …).

    Args:
        root: Data folder; relative ``*_annotations`` / ``*_images`` paths are relative to it.
        format: ``"via"``, ``"coco"``, or ``"auto"`` to detect it.
        class_names: Class names, index 0 = background (torchvision's convention); COCO categories are
            matched by name; VIA regions are class 1 unless ``class_attribute`` names their class.
        class_attribute: VIA region attribute that names each region's class (multi-class VIA data).
        train_annotations: The training split's COCO JSON, VIA export (CSV or JSON) or folder of VIA CSVs.
        train_images: The training split's image folder (default: beside the annotations, or ``images/``).
        val_annotations: As ``train_annotations``, for validation (default: detected, else held out).
        val_images: As ``train_images``, for validation.
        test_annotations: As ``train_annotations``, for testing (default: detected, else held out).
        test_images: As ``train_images``, for testing.
        batch_size: Images per batch.
        num_workers: Data-loading worker processes.
        min_size: Shorter image side after resizing (the detector does not resize again).
        max_size: Longest image side allowed after resizing.
        scale_range: Training scale jitter of the shorter side, relative to ``min_size``.
        hflip: Training probability of a horizontal flip.
        color_jitter: Training colour jitter strength (0 for none).
        val_fraction: Share of training images held out for validation when the layout has none.
        test_fraction: Share of training images held out for testing when the layout has none.
        seed: Seed of the hold-outs.
        on_bad_data: ``"error"`` stops before training at the first bad file (every image is decoded
            up front), naming it; ``"skip"`` leaves bad images and annotation files out, naming each once
            in the log; their count is in the dataset card and the training summary (:attr:`skipped_files`).
        synthetic: When set and ``root`` does not exist, write this synthetic orchard there (demos, tests).
        predict_root: Folder of images (searched recursively) for ``predict``; default: the test split.
            Needs no annotations, and no data set at ``root``.
        image_cache: Keep every training and evaluation image, decoded and resized to its load size, in a
            temporary folder for the run (``uint8``, about 4.7 MB per image at 1024x1536), so later epochs
            do not decode the photos again; ``False`` decodes every time.

    """

    pipeline = "fuji_apples"

    def __init__(
        self,
        root: str | Path = "data/Fuji-SfM",
        format: Format = "auto",
        class_names: list[str] | None = None,
        class_attribute: str | None = None,
        train_annotations: str | None = None,
        train_images: str | None = None,
        val_annotations: str | None = None,
        val_images: str | None = None,
        test_annotations: str | None = None,
        test_images: str | None = None,
        batch_size: int = 2,
        num_workers: int = 2,
        min_size: int = 1024,
        max_size: int = 1536,
        scale_range: tuple[float, float] = (0.8, 1.2),
        hflip: float = 0.5,
        color_jitter: float = 0.2,
        val_fraction: float = 0.15,
        test_fraction: float = 0.1,
        seed: int = 42,
        on_bad_data: Literal["error", "skip"] = "error",
        synthetic: SyntheticOrchard | None = None,
        predict_root: str | None = None,
        image_cache: bool = True,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.format = format
        self.class_names = list(class_names or ["background", "apple"])
        if len(self.class_names) < 2 or self.class_names[0] != "background":
            raise ValueError(
                f"data.class_names={self.class_names}: index 0 must be 'background' followed by the object "
                "classes, e.g. ['background', 'apple']."
            )
        self.class_attribute = class_attribute
        paths = {
            "train": (train_annotations, train_images),
            "val": (val_annotations, val_images),
            "test": (test_annotations, test_images),
        }
        self.explicit_paths = {
            split: (self._resolve(annotations), self._resolve(images)) for split, (annotations, images) in paths.items()
        }
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.min_size, self.max_size = min_size, max_size
        self.scale_range, self.hflip, self.color_jitter = tuple(scale_range), hflip, color_jitter
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.on_bad_data = on_bad_data
        self.synthetic = synthetic
        self.predict_root = Path(predict_root) if predict_root else None
        self.image_cache = image_cache
        self._cache: tempfile.TemporaryDirectory | None = None
        self._splits: dict[str, list[Sample]] | None = None
        self._layout: Layout | None = None
        #: One line per file left out under ``on_bad_data: skip`` (file, problem), after :meth:`splits`.
        self.skipped_files: list[str] = []
        #: ``{image: conversions}`` of images that were not plain 8-bit RGB, after a decode check.
        self.conversions: dict[str, tuple[str, ...]] = {}

    def _resolve(self, path: str | None) -> Path | None:
        return None if path is None else self.root / path

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    # ------------------------------------------------------------------ reading
    def prepare_data(self) -> None:
        """Write the synthetic orchard when one is configured and ``root`` is missing."""
        if self.synthetic is not None and not self.root.exists():
            log.info(
                "data.root=%s does not exist: writing the configured synthetic orchard there.", self.root
            )
            self.synthetic.write(self.root)

    def _read(self) -> tuple[dict[str, list[Sample]], list[str]]:
        self.prepare_data()
        self._layout = self.layout()
        splits: dict[str, list[Sample]] = {}
        problems: list[str] = []
        read: dict[tuple[Path, Path], tuple[list[Sample], list[str]]] = {}
        for split, source in self._layout.splits.items():
            key = (source.path, source.image_dir)
            if key in read:  # one file serving two splits (the original project's testset): problems once
                splits[split] = read[key][0]
                continue
            read[key] = read_split(source, self.class_names, self.class_attribute)
            splits[split], found = read[key]
            problems += found
        splits, problems = self._decodable(splits, problems)
        for split, fraction, salt in (("val", self.val_fraction, 0), ("test", self.test_fraction, 1)):
            if split not in splits:
                splits["train"], splits[split] = hold_out(splits["train"], fraction, self.seed + salt)
        return splits, problems

    def layout(self) -> Layout:
        """The layout found under ``root`` (or the explicit paths) and its splits on disk."""
        self.prepare_data()
        return find_layout(self.root, self.format, self.explicit_paths)

    def _decodable(
        self, splits: dict[str, list[Sample]], problems: list[str]
    ) -> tuple[dict[str, list[Sample]], list[str]]:
        """Decode every image (a truncated file passes a header read); leave out those that fail."""
        report = check_images([s.image for samples in splits.values() for s in samples])
        self.conversions = {str(path): done for path, (_, done) in report.items() if done}
        bad = {path: why for path, (why, _) in report.items() if why}
        problems = problems + [_undecodable(path, why) for path, why in bad.items()]
        return {split: [s for s in samples if s.image not in bad] for split, samples in splits.items()}, problems

    def splits(self) -> dict[str, list[Sample]]:
        """Return the samples per split (``train``, ``val``, ``test``), read once, after ``on_bad_data``."""
        if self._splits is None:
            splits, problems = self._read()
            if problems and self.on_bad_data == "error":
                more = (
                    f" ({len(problems) - 1} more problem(s): `harvest data check` lists them)"
                    if len(problems) > 1
                    else ""
                )
                raise DataError(f"{problems[0]}{more}; or set data.on_bad_data=skip to leave bad images out.")
            if problems:
                self.skipped_files = problems
                for problem in problems:
                    _log_skipped(problem)
                rank_zero_warn(
                    f"Skipped {len(problems)} bad annotation file(s)/image(s) under {self.root} "
                    "(data.on_bad_data=skip): each is named above and listed in the dataset card."
                )
            if not splits["train"]:
                raise DataError(f"data.root={self.root}: no usable training images.")
            self._splits = splits
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        """Build a dataset per split (the data is read once), or only the images to predict."""
        if stage == "predict" and self.predict_root is not None:
            self.datasets = {"predict": self._dataset("predict", self._predict_samples())}
            return
        self.datasets = {split: self._dataset(split, samples) for split, samples in self.splits().items()}

    def _dataset(self, split: str, samples: list[Sample]) -> InstanceDataset:
        scales = self.scale_range if split == "train" else (1.0, 1.0)
        size = load_size(self.min_size, self.max_size, scales)
        if self.image_cache and split != "predict" and self._cache is None:
            self._cache = tempfile.TemporaryDirectory(prefix="harvest-images-")  # removed with the module
        cache = Path(self._cache.name) if self._cache and split != "predict" else None
        dataset = EvaluationDataset if split in ("val", "test") else InstanceDataset
        return dataset(
            samples, self._transforms(split), load_size=size, on_bad_data=self.on_bad_data, cache_dir=cache
        )

    def _transforms(self, split: str):  # noqa: ANN202 - a torchvision v2 transform
        if split == "train":
            return train_transforms(
                self.min_size, self.max_size, self.scale_range, self.hflip, self.color_jitter
            )
        return eval_transforms(self.min_size, self.max_size)

    def inference_transform(self) -> Callable[[Image.Image | torch.Tensor], torch.Tensor]:
        """The evaluation resize and scaling of one decoded image (PIL or ``uint8[3, H, W]``), for serving."""
        transform = self._transforms("predict")

        def apply(image: Image.Image | torch.Tensor) -> torch.Tensor:
            image = pil_to_tensor(image) if isinstance(image, Image.Image) else image
            height, width = image.shape[-2:]
            empty = {
                "boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
                "labels": torch.zeros(0, dtype=torch.int64),
            }
            return transform(tv_tensors.Image(image), empty)[0].as_subclass(torch.Tensor)

        return apply

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        """Return shuffled training batches: a list of images and a list of targets."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Return validation batches."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Return test batches (a seeded hold-out of training when the layout has no test split)."""
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Return prediction batches: the images under ``predict_root`` (no targets), else the test split."""
        return self._loader("predict" if self.predict_root is not None else "test")

    def _predict_samples(self) -> list[Sample]:
        images = list_images(self.predict_root, recursive=True)
        if not images:
            raise FileNotFoundError(
                f"data.init_args.predict_root={self.predict_root}: no .jpg/.jpeg/.png images found there."
            )
        report = check_images(images)
        bad = [_undecodable(path, why) for path, (why, _) in report.items() if why]
        if bad and self.on_bad_data == "error":
            raise DataError(f"{bad[0]} ({len(bad)} unreadable); or set data.on_bad_data=skip to leave them out.")
        for problem in bad:
            _log_skipped(problem)
        self.skipped_files = bad
        samples = []
        for path in (p for p, (why, _) in report.items() if not why):
            width, height = image_size(path)  # upright: EXIF orientation applied
            samples.append(Sample(image=path, annotation=path, width=width, height=height))  # no annotation
        return samples

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """Describe the data: per split images, instances per class, negatives, mask areas (JSON-ready)."""
        splits = self.splits()
        layout = self._layout or self.layout()
        synthetic = (self.root / "SYNTHETIC.txt").is_file()
        out: dict[str, Any] = {
            "name": "synthetic orchard" if synthetic else "Fuji-SfM" if layout.name == "Fuji-SfM" else self.root.name,
            "root": str(self.root),
            "layout": layout.name,
            "format": layout.splits["train"].format,
            "sources": {
                split: {"annotations": _shown(source.path, self.root), "images": _shown(source.image_dir, self.root)}
                for split, source in layout.splits.items()
            },
            "class_names": self.class_names,
            "splits": {},
            "instances": {},
            "mask_area": {},
            "images_without_instances": {},
            "skipped_files": {"count": len(self.skipped_files), "files": list(self.skipped_files)},
        }
        for split, samples in splits.items():
            labels = [inst.label for s in samples for inst in s.instances]
            areas = [a for s in samples for a in s.areas()]
            out["splits"][split] = {
                "images": len(samples),
                "per_class": {name: labels.count(i) for i, name in enumerate(self.class_names) if i > 0},
            }
            out["instances"][split] = len(labels)
            out["mask_area"][split] = (
                {
                    "min": min(areas),
                    "median": statistics.median(areas),
                    "mean": statistics.fmean(areas),
                    "max": max(areas),
                }
                if areas
                else {"min": None, "median": None, "mean": None, "max": None}
            )
            out["images_without_instances"][split] = sum(1 for s in samples if not s.instances)
        return out

    def dataset_files(self) -> list[Path]:
        """Every image and annotation file under the data root, sorted (for a content hash); bad ones too."""
        self.prepare_data()
        return sorted({p for source in self.layout().splits.values() for p in source_files(source)})

    def sample_images(self, per_class: int = 4) -> dict[str, list[Path]]:
        """Up to ``per_class`` images showing each object class (not ``background``)."""
        out: dict[str, list[Path]] = {name: [] for name in self.class_names[1:]}
        for split in SPLITS:
            for sample in self.splits().get(split, []):
                for label in {inst.label for inst in sample.instances}:
                    if len(out[self.class_names[label]]) < per_class:
                        out[self.class_names[label]].append(sample.image)
        return {name: paths for name, paths in out.items() if paths}

    def check(self) -> list[str]:
        """List every problem of the data set in one line each (file, problem, fix), without raising.

        Besides what loading checks, every image is decoded, so a truncated file is found here rather
        than halfway through an epoch.
        """
        try:
            splits, problems = self._read()
        except (FileNotFoundError, AnnotationError) as err:
            return [str(err)]
        if not problems and splits["train"] and self._splits is None:
            self._splits = splits  # what splits() would make of it: describe() need not decode every image again
        return problems


def _undecodable(path: Path, why: str) -> str:
    return f"{path}: cannot be decoded ({why}): replace or remove the file."


@rank_zero_only
def _log_skipped(problem: str) -> None:
    log.warning("Skipping (data.on_bad_data: skip): %s", problem)
