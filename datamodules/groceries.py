"""DS2GROCERIES: image folders per split and class, with a seeded labeled/unlabeled split of train."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from datamodules.image_folder import (
    ImageDataset,
    build_transform,
    class_folders,
    list_images,
    scan_splits,
    structure_problems,
    unreadable_images,
)
from datamodules.labeled_split import make_split
from datamodules.synthetic import SyntheticGroceries
from datamodules.unlabeled import TwoViewDataset, strong_transform
from harvest.core.image_io import BadImageError, bad_image_message
from harvest.runs.directory import run_dir, write_json_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
Sample = tuple[Path, int]


class GroceriesDataModule(pl.LightningDataModule):
    """Grocery images in the DS2GROCERIES layout ``ROOT/{train,val,test}/<class>/*.{jpg,jpeg,png}``.

    Class names are the sorted folder names of ``train/`` and index every split the same way;
    ``val/`` is optional (then ``val_fraction`` of every training class is held out, seeded). A
    seeded, stratified ``labeled_ratio`` of the training images keep their labels (at least one per
    class); the others are unlabeled. ``train_dataloader`` yields the labeled images only (for
    fine-tuning); :meth:`all_train_dataloader` yields every training image with its semi-supervised
    target (``-1`` when unlabeled) for feature extraction. The split is written to
    ``<run dir>/data_split.json`` and kept in the checkpoint (:meth:`state_dict`).

    With ``unlabeled_ratio > 0`` (semi-supervised fine-tuning, ``configs/ssl/fixmatch.yaml``)
    ``train_dataloader`` is a ``CombinedLoader`` of ``{"labeled": …, "unlabeled": …}`` batches
    (``max_size_cycle``: the shorter loader starts over), the unlabeled batches ``unlabeled_ratio``
    times larger and made of a weak and a strong (RandAugment) view of each image. Under DDP each
    loader gets its own distributed sampler from Lightning.

    Args:
        root: Data set folder.
        labeled_ratio: Fraction of each training class that keeps its labels.
        val_fraction: Fraction of each training class held out for validation when there is no ``val/``.
        seed: Seed of the labeled choice and of the validation hold-out.
        image_size: Side of the square images fed to the network.
        batch_size: Batch size of every data loader.
        num_workers: Data loader worker processes.
        augmentations: Training transforms applied after the random resized crop (torchvision
            ``transforms.v2`` modules); ``None`` means a random horizontal flip, ``[]`` none.
        crop_scale: Area range of the training random resized crop.
        synthetic: Demo only: when ``root`` does not exist, write a synthetic grocery set of this shape
            there (and say so); never used when the folder exists.
        on_bad_data: ``error``: an image that cannot be decoded stops the run before training, naming the
            file (every image is decoded up front); ``skip``: such images are left out, each named once in
            the log, their count in the dataset card and the training summary (:attr:`skipped_files`).
        predict_root: Folder of images (searched recursively) for ``predict``; default: the test split.
        class_names: Class names in label order. Read from the ``train/`` folders when the data set is
            there (and must then agree); given with ``predict_root``, prediction needs no data set at
            ``root`` (a trained model on new images, as ``harvest monitor --images`` runs it).
        unlabeled_ratio: Unlabeled images per labeled image in a training batch (FixMatch's mu);
            ``0`` trains on the labeled images only.
        randaugment_ops: Operations per image of the strong view's RandAugment.
        randaugment_magnitude: Their magnitude (0-30).

    """

    pipeline = "groceries_ssl"
    split_filename = "data_split.json"

    def __init__(
        self,
        root: str = "data/DS2GROCERIES",
        labeled_ratio: float = 0.1,
        val_fraction: float = 0.1,
        seed: int = 42,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        augmentations: list[torch.nn.Module] | None = None,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        synthetic: SyntheticGroceries | None = None,
        on_bad_data: Literal["error", "skip"] = "error",
        predict_root: str | None = None,
        class_names: list[str] | None = None,
        unlabeled_ratio: int = 0,
        randaugment_ops: int = 2,
        randaugment_magnitude: int = 10,
    ) -> None:
        super().__init__()
        if unlabeled_ratio < 0:
            raise ValueError(f"data.init_args.unlabeled_ratio={unlabeled_ratio}: use 0 (off) or a positive integer.")
        self.unlabeled_ratio, self.randaugment = unlabeled_ratio, (randaugment_ops, randaugment_magnitude)
        if not 0.0 < labeled_ratio <= 1.0:
            raise ValueError(f"data.init_args.labeled_ratio={labeled_ratio}: use a fraction in (0, 1].")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.init_args.val_fraction={val_fraction}: use a fraction in (0, 1).")
        self.root = Path(root)
        self.labeled_ratio, self.val_fraction, self.seed = labeled_ratio, val_fraction, seed
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.augmentations = [v2.RandomHorizontalFlip()] if augmentations is None else list(augmentations)
        self.crop_scale = tuple(crop_scale)
        self.on_bad_data = on_bad_data
        self.predict_root = Path(predict_root) if predict_root else None
        if synthetic is not None and not self.root.exists():
            log.warning(
                "data.root=%s does not exist: writing the configured synthetic grocery set there (demo data).",
                self.root,
            )
            synthetic.write(self.root)
        present = (self.root / "train").is_dir()
        if not present and not (class_names and self.predict_root):
            raise self._missing()
        self.class_names: list[str] = class_folders(self.root / "train") if present else list(class_names or [])
        if present and class_names and list(class_names) != self.class_names:
            raise ValueError(
                f"data.init_args.class_names={list(class_names)} differ from the class folders of "
                f"{self.root / 'train'}: {self.class_names}; leave class_names out or fix the folders."
            )
        if not self.class_names:
            raise FileNotFoundError(f"{self.root / 'train'} holds no class folders: add train/<class>/*.jpg.")
        self.num_classes = len(self.class_names)
        self.samples: dict[str, list[Sample]] = {}
        self.labeled_mask = np.zeros(0, dtype=bool)
        self.split: dict[str, Any] | None = None
        self._train_all: list[Sample] = []
        #: One line per image left out under ``on_bad_data: skip`` (file, problem).
        self.skipped_files: list[str] = []
        #: ``{image: conversions}`` of images that were not plain 8-bit RGB, after a decode check.
        self.conversions: dict[str, tuple[str, ...]] = {}
        self._bad: set[Path] = set()

    def _missing(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"DS2GROCERIES not found: {self.root / 'train'} is missing. Put the data set at {self.root} as "
            "train/<class>/*.jpg, test/<class>/*.jpg (val/ optional), or point data.init_args.root at it."
        )

    # ------------------------------------------------------------------ files and problems
    def _files(self) -> dict[str, dict[str, list[Path]]]:
        return scan_splits(self.root, SPLITS)

    def check(self) -> list[str]:
        """Every problem of the data set as one-line messages (file, problem, fix); never raises."""
        files = self._files()
        problems = structure_problems(self.root, self.class_names, files)
        return problems + [bad_image_message(path, why) for path, why in unreadable_images(files, self.conversions)]

    def dataset_files(self) -> list[Path]:
        """Every image file of every split, sorted (what a content hash of the data set covers)."""
        return sorted(p for classes in self._files().values() for images in classes.values() for p in images)

    # ------------------------------------------------------------------ preparation and split
    def _prepare(self) -> None:
        """Check the folders and images once and build the splits (raises the first problem found)."""
        if self._train_all:
            return
        files = self._files()
        problems = structure_problems(self.root, self.class_names, files)
        if problems:
            more = len(problems) - 1
            more = f" ({more} more problem{'s' * (more > 1)}: run `harvest data check`)" if more else ""
            raise ValueError(problems[0] + more)
        bad = unreadable_images(files, self.conversions)
        self._skip(bad)
        skip = self._bad
        self.samples = {
            split: [
                (p, i) for i, name in enumerate(self.class_names) for p in files[split][name] if p not in skip
            ]
            for split in files
        }
        for split, samples in self.samples.items():
            missing = set(range(self.num_classes)) - {label for _, label in samples}
            if missing:
                name = self.class_names[min(missing)]
                raise ValueError(
                    f"{self.root / split / name}: no readable images left in class '{name}'; add images."
                )
        self._train_all = self.samples["train"]
        self._apply_split(self.split or self._new_split())

    def _skip(self, bad: list[tuple[Path, str]]) -> None:
        """Raise on the first unreadable image (``on_bad_data: error``), or name each in the log and keep count."""
        if bad and self.on_bad_data == "error":
            raise BadImageError(f"{bad_image_message(*bad[0])} ({len(bad)} unreadable images found)")
        new = [(p, why) for p, why in bad if p not in self._bad]
        for path, why in new:
            log.warning("Skipping %s (data.on_bad_data: skip): cannot read image (%s)", path, why)
        if new:
            log.warning("Skipping %d unreadable images (data.on_bad_data: skip).", len(new))
        self._bad |= {p for p, _ in new}
        self.skipped_files += [f"{p}: cannot read image ({why})" for p, why in new]

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _new_split(self) -> dict[str, Any]:
        return make_split(
            [self._relative(p) for p, _ in self._train_all],
            np.array([label for _, label in self._train_all]),
            labeled_ratio=self.labeled_ratio,
            val_fraction=None if "val" in self.samples else self.val_fraction,
            seed=self.seed,
        )

    def _apply_split(self, split: dict[str, Any]) -> None:
        known = {self._relative(p) for p, _ in self._train_all}
        unknown = sorted((set(split["val_from_train"]) | set(split["labeled"])) - known)
        if unknown:
            raise ValueError(
                f"{self.root}: the saved labeled split names {len(unknown)} training images "
                "that are not there "
                f"(e.g. {unknown[0]}); use the data the split was made on, or start a new run."
            )
        held, labeled = set(split["val_from_train"]), set(split["labeled"])
        if held:
            self.samples["val"] = [s for s in self._train_all if self._relative(s[0]) in held]
        self.samples["train"] = [s for s in self._train_all if self._relative(s[0]) not in held]
        self.labeled_mask = np.array(
            [self._relative(p) in labeled for p, _ in self.samples["train"]], dtype=bool
        )
        self.split = split
        trainer = self.trainer
        if trainer is not None and not trainer.fast_dev_run and trainer.is_global_zero:
            write_json_atomic(run_dir(trainer) / self.split_filename, split)

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_root is not None:
            return  # predict_dataloader reads predict_root only
        if not (self.root / "train").is_dir():
            raise self._missing()
        self._prepare()

    def state_dict(self) -> dict[str, Any]:
        return {"split": self.split} if self.split else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("split"):
            self.split = state_dict["split"]
            if self._train_all:
                self._apply_split(self.split)

    # ------------------------------------------------------------------ labels
    def ssl_targets(self) -> np.ndarray:
        """Targets of :meth:`all_train_dataloader`'s images: the class index when labeled, else ``-1``."""
        self._prepare()
        return np.where(self.labeled_mask, self.train_true_labels(), -1)

    def train_true_labels(self) -> np.ndarray:
        """Return the true class of each image of :meth:`all_train_dataloader` (for reporting only)."""
        self._prepare()
        return np.array([label for _, label in self.samples["train"]], dtype=np.int64)

    # ------------------------------------------------------------------ loaders
    def _loader(
        self, samples: list[Sample], train: bool = False, dataset: Dataset | None = None, batch_size: int = 0
    ) -> DataLoader:
        transform = build_transform(self.image_size, train, self.augmentations, self.crop_scale)
        batch_size = batch_size or self.batch_size
        per_rank = math.ceil(len(samples) / (self.trainer.world_size if self.trainer else 1))
        return DataLoader(
            dataset or ImageDataset(samples, transform, min_size=self.image_size, on_bad_data=self.on_bad_data),
            batch_size=batch_size,
            shuffle=train,
            # drop a last batch of one image (BatchNorm cannot train on it), and only that
            drop_last=train and per_rank > batch_size and per_rank % batch_size == 1,
            num_workers=self.num_workers,
            persistent_workers=train and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def inference_transform(self) -> v2.Compose:
        """The evaluation transform of one decoded image (PIL or ``uint8[3, H, W]``): what serving applies."""
        return build_transform(self.image_size, False, [], self.crop_scale)

    def train_dataloader(self) -> DataLoader | CombinedLoader:
        """Load the labeled training images, augmented and shuffled; beside them unlabeled ones when asked.

        Returns:
            The labeled loader, or with ``unlabeled_ratio > 0`` a ``CombinedLoader`` of
            ``{"labeled": (images, labels, paths), "unlabeled": (weak, strong, true labels, paths)}``.

        """
        self._prepare()
        pairs = list(zip(self.samples["train"], self.labeled_mask, strict=True))
        labeled = self._loader([s for s, keep in pairs if keep], train=True)
        unlabeled = [s for s, keep in pairs if not keep]
        if not self.unlabeled_ratio or not unlabeled:
            return labeled
        weak = build_transform(self.image_size, True, self.augmentations, self.crop_scale)
        strong = strong_transform(self.image_size, self.crop_scale, self.augmentations, *self.randaugment)
        views = TwoViewDataset(unlabeled, weak, strong, min_size=self.image_size, on_bad_data=self.on_bad_data)
        size = self.batch_size * self.unlabeled_ratio
        loaders = {"labeled": labeled, "unlabeled": self._loader(unlabeled, True, views, batch_size=size)}
        return CombinedLoader(loaders, mode="max_size_cycle")

    def val_dataloader(self) -> DataLoader:
        self._prepare()
        return self._loader(self.samples["val"])

    def test_dataloader(self) -> DataLoader:
        self._prepare()
        return self._loader(self.samples["test"])

    def all_train_dataloader(self) -> DataLoader:
        """Load every training image (labeled or not) in a fixed order, with its :meth:`ssl_targets` value."""
        targets = self.ssl_targets()
        return self._loader([(p, int(t)) for (p, _), t in zip(self.samples["train"], targets, strict=True)])

    def predict_dataloader(self) -> DataLoader:
        """Images under ``predict_root`` (label ``-1``), else the test split."""
        if self.predict_root is None:
            return self.test_dataloader()
        images = list_images(self.predict_root, recursive=True)
        if not images:
            raise FileNotFoundError(
                f"data.init_args.predict_root={self.predict_root}: no .jpg/.jpeg/.png images found there."
            )
        self._skip(unreadable_images({"predict": {"": images}}, self.conversions))
        return self._loader([(p, -1) for p in images if p not in self._bad])

    # ------------------------------------------------------------------ description
    def describe(self) -> dict[str, Any]:
        """Describe the data set: per-split and per-class counts, the labeled/unlabeled split (JSON-ready)."""
        self._prepare()
        splits = {
            split: {
                "images": len(samples),
                "per_class": {
                    name: sum(1 for _, label in samples if label == i)
                    for i, name in enumerate(self.class_names)
                },
            }
            for split, samples in self.samples.items()
        }
        labeled = int(self.labeled_mask.sum())
        return {
            "name": self.root.name,
            "root": str(self.root),
            "format": "image folders: <split>/<class>/*.{jpg,jpeg,png} (DS2GROCERIES)",
            "class_names": list(self.class_names),
            "splits": splits,
            "labeled_split": {
                "labeled": labeled,
                "unlabeled": len(self.labeled_mask) - labeled,
                "labeled_ratio": self.labeled_ratio,
                "seed": self.seed,
            },
            "skipped_files": {"count": len(self.skipped_files), "files": list(self.skipped_files)},
        }

    def sample_images(self, per_class: int = 4) -> dict[str, list[Path]]:
        """Up to ``per_class`` training images of every class, spread over the sorted file list."""
        train = self._files().get("train", {})
        picks = {}
        for name in self.class_names:
            images = [p for p in train.get(name, []) if p not in self._bad]
            index = np.unique(
                np.linspace(0, len(images) - 1, num=min(per_class, len(images))).round().astype(int)
            )
            picks[name] = [images[i] for i in index]
        return picks
