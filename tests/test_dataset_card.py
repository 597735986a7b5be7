"""Data versioning: the card's content hash, counts and imbalance, the sample grid and the quality check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import copy_of
from PIL import Image

from datamodules import FujiApplesDataModule, GroceriesDataModule
from harvest.monitoring.dataset_card import build_card, check_dataset, sample_grid


def groceries(root: Path) -> GroceriesDataModule:
    return GroceriesDataModule(root=str(root), image_size=32, batch_size=8, num_workers=0)


def test_same_data_same_hash_anywhere_and_any_change_changes_it(tiny_groceries: Path, tmp_path: Path) -> None:
    card = build_card(groceries(tiny_groceries))
    moved = copy_of(tiny_groceries, tmp_path / "elsewhere" / "copy")
    assert build_card(groceries(moved))["content_hash"] == card["content_hash"]

    image = next((moved / "train" / card["class_names"][0]).iterdir())
    with Image.open(image) as pixels:
        pixels = pixels.convert("RGB")
    pixels.putpixel((0, 0), (255, 0, 255))  # one pixel of one image
    pixels.save(image, quality=95)
    changed = build_card(groceries(moved))["content_hash"]
    image.rename(image.with_name("renamed.jpg"))
    renamed = build_card(groceries(moved))["content_hash"]
    assert len({card["content_hash"], changed, renamed}) == 3


def test_card_counts_splits_classes_and_labeled_split(tiny_groceries: Path) -> None:
    card = build_card(groceries(tiny_groceries))
    assert card["name"] == "DS2GROCERIES" and card["pipeline"] == "groceries_ssl" and card["num_classes"] == 3
    assert card["files"] == 60 and card["bytes"] == sum(
        p.stat().st_size for p in tiny_groceries.rglob("*.jpg")
    )
    assert {s: v["images"] for s, v in card["splits"].items()} == {"train": 36, "val": 9, "test": 15}
    assert all(set(v["per_class"].values()) == {v["images"] // 3} for v in card["splits"].values())
    split = card["labeled_split"]  # labeled_ratio 0.1 with at least one per class
    assert card["class_imbalance"]["ratio"] == 1.0 and (split["labeled"], split["unlabeled"]) == (3, 33)
    assert (
        json.loads(json.dumps(card)) == card == build_card(groceries(tiny_groceries))
    )  # JSON-ready, deterministic


def test_imbalance_is_measured_and_warned_about(tiny_groceries: Path, tmp_path: Path) -> None:
    root = copy_of(tiny_groceries, tmp_path / "imbalanced")
    thin = sorted((root / "train").iterdir())[1]
    for image in sorted(thin.iterdir())[3:]:  # keep 3 of 12
        image.unlink()
    card = build_card(groceries(root))
    assert card["class_imbalance"] == {
        "ratio": 4.0,
        "largest": card["class_imbalance"]["largest"],
        "smallest": thin.name,
    }
    assert not [f for f in check_dataset(groceries(root)) if "imbalance" in f.message]
    (warning,) = [f for f in check_dataset(groceries(root), max_imbalance=3.0) if "imbalance" in f.message]
    assert (
        warning.severity == "warning" and "split 'train'" in warning.message and thin.name in warning.message
    )


def test_check_finds_duplicates_corrupt_images_and_empty_classes(
    tiny_groceries: Path, tmp_path: Path
) -> None:
    root = copy_of(tiny_groceries, tmp_path / "broken")
    first_class = sorted((root / "train").iterdir())[0]
    image = sorted(first_class.iterdir())[0]
    shutil.copy(image, root / "test" / first_class.name / "leaked.jpg")  # train/test leak
    shutil.copy(
        sorted(first_class.iterdir())[1], first_class / "again.jpg"
    )  # another one, copied in its folder
    (root / "val" / first_class.name / "broken.jpg").write_bytes(b"not a jpeg")
    empty = sorted((root / "test").iterdir())[-1]
    for path in empty.iterdir():
        path.unlink()

    findings = check_dataset(groceries(root))
    errors = [f.message for f in findings if f.severity == "error"]
    assert any("broken.jpg" in m and "cannot read" in m for m in errors)
    assert any(empty.name in m and "empty" in m for m in errors)
    (leak,) = [m for m in errors if "identical files" in m]
    assert "leaked.jpg" in leak and "different folders" in leak
    (copy,) = [f for f in findings if f.severity == "warning" and "identical" in f.message]
    assert "again.jpg" in copy.message and "one folder" in copy.message
    assert check_dataset(groceries(tiny_groceries)) == []


def test_sample_grid_has_a_row_per_class(tiny_groceries: Path, tmp_path: Path) -> None:
    samples = groceries(tiny_groceries).sample_images(per_class=2)
    grid = sample_grid(samples, tmp_path / "plots" / "grid.png", thumb=32)
    with Image.open(grid) as image:
        assert image.size == (110 + 2 * 36, 20 + 3 * 36)  # a title above a row per class
        assert min(image.crop((0, 0, 110, 20)).convert("L").getdata()) < 100  # the title's text


def test_fuji_card_has_instances_and_mask_areas(tiny_orchard: Path) -> None:
    card = build_card(FujiApplesDataModule(root=str(tiny_orchard), batch_size=2, num_workers=0))
    assert card["pipeline"] == "fuji_apples" and card["format"] == "via"
    assert card["files"] == 2 * 11  # one image and one VIA CSV per image
    assert sum(card["instances"].values()) == sum(s["per_class"]["apple"] for s in card["splits"].values())
    assert all(
        0 < area["min"] <= area["median"] <= area["max"] for area in card["mask_area"].values() if area
    )
    assert sum(card["images_without_instances"].values()) >= 1  # the orchard's empty images are negatives


def test_wandb_dataset_artifact_is_versioned_by_content(tiny_groceries: Path, tmp_path: Path) -> None:
    from callbacks.dataset_card import dataset_artifact

    def artifact(root: Path, folder: Path):  # noqa: ANN202
        module = groceries(root)
        card = build_card(module)
        return dataset_artifact(card, sample_grid(module.sample_images(2), folder / "grid.png"))

    here = artifact(tiny_groceries, tmp_path / "a")
    moved = artifact(copy_of(tiny_groceries, tmp_path / "elsewhere" / tiny_groceries.name), tmp_path / "b")
    assert here.manifest.digest() == moved.manifest.digest()  # same data: same W&B version
    assert here.metadata["root"] != moved.metadata["root"] and here.type == "dataset"
    assert set(here.manifest.entries) == {"dataset_card.json", "dataset_samples.png"}

    extra = copy_of(tiny_groceries, tmp_path / "more" / tiny_groceries.name)
    shutil.copy(next((extra / "train").rglob("*.jpg")), extra / "train" / "apple" / "extra.jpg")
    assert artifact(extra, tmp_path / "c").manifest.digest() != here.manifest.digest()
