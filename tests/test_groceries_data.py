"""GroceriesDataModule: folders, labeled split, loaders, description, and bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_of

from datamodules.groceries import GroceriesDataModule
from datamodules.image_folder import BadImageError
from datamodules.labeled_split import stratified_choice
from datamodules.synthetic import SyntheticGroceries, write_groceries


def _dm(root: Path, **kwargs) -> GroceriesDataModule:
    kwargs = {"image_size": 32, "batch_size": 4, "num_workers": 0, **kwargs}
    return GroceriesDataModule(root=str(root), **kwargs)


def _labeled(dm: GroceriesDataModule) -> set[str]:
    dm.setup("fit")
    return {str(p) for (p, _), keep in zip(dm.samples["train"], dm.labeled_mask, strict=True) if keep}


def test_classes_are_sorted_folder_names_shared_by_every_split(tiny_groceries: Path) -> None:
    dm = _dm(tiny_groceries)
    assert dm.class_names == ["apple", "banana", "bread"] and dm.num_classes == 3
    dm.setup("fit")
    for split in ("train", "val", "test"):
        for path, label in dm.samples[split]:
            assert path.parent.name == dm.class_names[label]


def test_labeled_split_is_stratified_seeded_and_has_one_label_per_class_at_least(
    tiny_groceries: Path,
) -> None:
    dm = _dm(tiny_groceries, labeled_ratio=0.25, seed=3)
    labeled = _labeled(dm)
    per_class = {name: sum(Path(p).parent.name == name for p in labeled) for name in dm.class_names}
    assert per_class == {"apple": 3, "banana": 3, "bread": 3}  # 25% of 12 in every class
    assert labeled == _labeled(_dm(tiny_groceries, labeled_ratio=0.25, seed=3))  # reproducible
    assert labeled != _labeled(_dm(tiny_groceries, labeled_ratio=0.25, seed=4))  # the seed decides
    tiny = _dm(tiny_groceries, labeled_ratio=0.01)
    assert len(_labeled(tiny)) == 3  # at least one per class

    targets = tiny.ssl_targets()
    truth = tiny.train_true_labels()
    assert (targets == -1).sum() == 33 and np.array_equal(targets[targets >= 0], truth[targets >= 0])


def test_stratified_choice_respects_limits() -> None:
    labels = np.array([0] * 10 + [1] * 2 + [2] * 1)
    mask = stratified_choice(labels, 0.5, seed=0, min_per_class=1, keep_per_class=1)
    assert [int(mask[labels == c].sum()) for c in (0, 1, 2)] == [5, 1, 0]
    assert np.array_equal(mask, stratified_choice(labels, 0.5, seed=0, min_per_class=1, keep_per_class=1))


def test_validation_is_split_from_train_when_val_is_missing(tmp_path: Path) -> None:
    root = write_groceries(
        tmp_path / "g", num_classes=2, train_per_class=10, val_per_class=0, test_per_class=2, image_size=16
    )
    dm = _dm(root, val_fraction=0.2)
    dm.setup("fit")
    val = {str(p) for p, _ in dm.samples["val"]}
    assert len(val) == 4 and all("/train/" in p for p in val)
    assert not val & {str(p) for p, _ in dm.samples["train"]} and len(dm.samples["train"]) == 16


def test_split_is_kept_in_the_state_dict(tiny_groceries: Path) -> None:
    first = _dm(tiny_groceries, seed=1)
    first.setup("fit")
    other = _dm(tiny_groceries, seed=2)
    other.load_state_dict(json.loads(json.dumps(first.state_dict())))  # what a checkpoint carries is plain data
    other.setup("fit")
    assert np.array_equal(other.labeled_mask, first.labeled_mask)


def test_loaders_train_on_labeled_images_and_extract_from_all(tiny_groceries: Path) -> None:
    dm = _dm(tiny_groceries, labeled_ratio=0.5)
    dm.setup("fit")
    train = [batch for batch in dm.train_dataloader()]
    assert [len(b[1]) for b in train] == [4, 4, 4, 4, 2] and all((b[1] >= 0).all() for b in train)  # 18 labeled
    odd = _dm(tiny_groceries, labeled_ratio=0.5, batch_size=17)
    assert [len(b[1]) for b in odd.train_dataloader()] == [17]  # not a batch of one image for BatchNorm
    images, targets, paths = next(iter(dm.all_train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32 and len(paths) == 4
    everything = torch.cat([b[1] for b in dm.all_train_dataloader()]).numpy()
    assert np.array_equal(everything, dm.ssl_targets())
    assert len(dm.test_dataloader().dataset) == 15 and len(dm.val_dataloader().dataset) == 9


def test_describe_sample_images_and_files(tiny_groceries: Path) -> None:
    dm = _dm(tiny_groceries, labeled_ratio=0.25)
    card = json.loads(json.dumps(dm.describe()))
    assert card["class_names"] == ["apple", "banana", "bread"] and card["root"] == str(tiny_groceries)
    assert card["splits"]["train"] == {"images": 36, "per_class": {"apple": 12, "banana": 12, "bread": 12}}
    assert card["splits"]["test"]["images"] == 15
    assert card["labeled_split"] == {"labeled": 9, "unlabeled": 27, "labeled_ratio": 0.25, "seed": 42}
    files = dm.dataset_files()
    assert len(files) == 36 + 9 + 15 and files == sorted(files)
    samples = dm.sample_images(per_class=2)
    assert list(samples) == dm.class_names and all(len(v) == 2 and v[0].is_file() for v in samples.values())
    assert dm.check() == []


def test_missing_root_says_where_to_put_the_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="DS2GROCERIES not found") as error:
        _dm(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "nowhere").exists()  # never synthesised silently


def test_a_missing_root_with_synthetic_settings_gets_the_demo_set_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="datamodules.groceries"):
        dm = _dm(tmp_path / "synthetic", synthetic=SyntheticGroceries())
    assert dm.num_classes == 6 and (tmp_path / "synthetic" / "test" / "milk").is_dir()
    assert [r.getMessage() for r in caplog.records] == [
        f"data.root={tmp_path / 'synthetic'} does not exist: "
        "writing the configured synthetic grocery set there (demo data)."
    ]


def test_empty_class_and_class_missing_from_a_split_are_named(tiny_groceries: Path, tmp_path: Path) -> None:
    root = copy_of(tiny_groceries, tmp_path / "g")
    for image in (root / "val" / "banana").iterdir():
        image.unlink()
    (root / "test" / "bread").rename(tmp_path / "moved")
    dm = _dm(root)
    with pytest.raises(ValueError, match="empty class") as error:
        dm.setup("fit")
    assert str(error.value).startswith(
        str(root / "val" / "banana")
    ) and "(1 more problem: run `harvest data check`)" in str(error.value)
    assert dm.check() == [
        f"{root / 'val' / 'banana'}: empty class (no .jpg/.jpeg/.png files); "
        "add images or remove the class from every split.",
        f"{root / 'test' / 'bread'}: class 'bread' is missing from split 'test'; "
        "add the folder with images, or remove the class from every split.",
    ]


def test_corrupt_image_fails_naming_the_file_or_is_skipped_with_a_count(
    tiny_groceries: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_of(tiny_groceries, tmp_path / "g")
    bad = root / "train" / "apple" / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    truncated = root / "train" / "banana" / "banana_train_0000.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(BadImageError, match="cannot read image") as error:
        _dm(root).setup("fit")
    assert (
        str(bad) in str(error.value) and "on_bad_data: skip" in str(error.value) and "2 unreadable" in str(error.value)
    )
    assert sorted(p.split(":")[0] for p in _dm(root).check()) == sorted([str(bad), str(truncated)])

    monkeypatch.setattr(logging.getLogger("datamodules"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="datamodules.groceries"):
        dm = _dm(root, on_bad_data="skip")
        dm.setup("fit")
    assert "Skipping 2 unreadable images" in caplog.text
    assert len(dm.samples["train"]) == 35  # 37 files, 2 unreadable
