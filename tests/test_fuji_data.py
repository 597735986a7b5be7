"""Fuji apple data: VIA CSVs and COCO files as users have them, transforms, bad data named in one line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_of
from PIL import Image
from pycocotools import mask as mask_utils

from datamodules import FujiApplesDataModule
from datamodules.detection_transforms import eval_transforms, scale_jitter_sizes, train_transforms
from datamodules.fuji_apples import DataError
from datamodules.instance_data import InstanceDataset, boxes_from_masks
from datamodules.synthetic_orchard import SyntheticOrchard
from datamodules.via import AnnotationError, read_via_csv

HEADER = (
    "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n"
)
TRAIN = Path("1-Mask-set") / "training_images_and_annotations"


def via_row(filename: str, count: int, region_id: int, shape: dict) -> str:
    quoted = json.dumps(shape).replace('"', '""')
    return f'{filename},1234,"{{}}",{count},{region_id},"{quoted}","{{}}"\n'


def square(x: int, y: int, size: int) -> dict:
    return {
        "name": "polygon",
        "all_points_x": [x, x + size, x + size, x],
        "all_points_y": [y, y, y + size, y + size],
    }


def write_image(path: Path, width: int = 40, height: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, dtype=np.uint8)).save(path)
    return path


def fuji_folder(tmp_path: Path, csv_text: str | None, image: str = "_MG_0001_01.jpg") -> Path:
    """A Fuji-SfM root with one image and (unless ``None``) its VIA CSV."""
    folder = tmp_path / "Fuji-SfM" / TRAIN
    write_image(folder / image)
    if csv_text is not None:
        (folder / f"mask_{Path(image).stem}.csv").write_text(csv_text)
    return tmp_path / "Fuji-SfM"


# ---------------------------------------------------------------------- VIA CSV
def test_via_csv_with_quoted_json_several_regions_and_shapes(tmp_path: Path) -> None:
    circle = {"name": "circle", "cx": 20, "cy": 15, "r": 4}
    text = "#" + HEADER + via_row("a.jpg", 3, 0, square(1, 2, 5)) + via_row("a.jpg", 3, 1, square(10, 10, 8))
    text += via_row("a.jpg", 3, 2, circle) + via_row("b.jpg", 0, 0, {})
    path = tmp_path / "mask_a.csv"
    path.write_text(text)
    images = read_via_csv(path)
    assert sorted(images) == ["a.jpg", "b.jpg"] and images["b.jpg"] == []
    first, second, third = images["a.jpg"]
    assert first.polygon == [1.0, 2.0, 6.0, 2.0, 6.0, 7.0, 1.0, 7.0] and first.where == f"{path}, row 2"
    assert second.polygon[:2] == [10.0, 10.0] and len(third.polygon) == 64  # the circle as a 32-point polygon


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty annotation file"),
        ("a,b,c\n1,2,3\n", "not a VIA CSV export, the header lacks filename"),
        (
            HEADER + 'a.jpg,1,"{}",1,0,"{""name"":""polygon"",""all_points_x"":[1,2,3]","{}"\n',
            "row 2: region_shape_attributes",
        ),
        (
            HEADER + via_row("a.jpg", 1, 0, {"name": "spline", "cx": 1, "cy": 2}),
            "region shape 'spline' is not supported",
        ),
    ],
    ids=["empty", "not-via", "bad-json", "unsupported-shape"],
)
def test_via_csv_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "mask__MG_0001_01.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=expected) as info:
        read_via_csv(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------- bad data in the data module
@pytest.mark.parametrize(
    ("csv_text", "expected"),
    [
        (
            HEADER + via_row("_MG_0002_01.jpg", 1, 0, square(1, 1, 5)),
            "names image _MG_0002_01.jpg, which is missing",
        ),
        (
            HEADER
            + via_row(
                "_MG_0001_01.jpg", 1, 0, {"name": "polygon", "all_points_x": [1, 5], "all_points_y": [1, 5]}
            ),
            "polygon has 2 point\\(s\\), a mask needs at least 3",
        ),
        (HEADER + via_row("_MG_0001_01.jpg", 1, 0, square(30, 20, 40)), "outside the 40x30 image"),
        ("", "empty annotation file"),
        (None, "no annotations \\(expected .*mask__MG_0001_01.csv\\)"),
    ],
    ids=["missing-image", "two-points", "outside", "empty-csv", "no-csv"],
)
def test_bad_data_stops_with_one_line_naming_the_file(
    tmp_path: Path, csv_text: str | None, expected: str
) -> None:
    root = fuji_folder(tmp_path, csv_text)
    dm = FujiApplesDataModule(root=root, num_workers=0)
    with pytest.raises(DataError, match=expected) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(root / TRAIN) in message and "\n" not in message and "on_bad_data=skip" in message
    assert re.search(expected, dm.check()[0])
    assert root / TRAIN / "_MG_0001_01.jpg" in dm.dataset_files()  # listed (for hashing) even when bad


def test_unreadable_image_is_named_and_skip_mode_counts_what_it_leaves_out(tmp_path: Path) -> None:
    root = fuji_folder(tmp_path, HEADER + via_row("_MG_0001_01.jpg", 1, 0, square(2, 2, 10)))
    folder = root / TRAIN
    (folder / "_MG_0001_02.jpg").write_bytes(b"not a jpeg at all")
    (folder / "mask__MG_0001_02.csv").write_text(HEADER + via_row("_MG_0001_02.jpg", 0, 0, {}))
    with pytest.raises(DataError, match=r"_MG_0001_02.jpg: cannot be read as an image"):
        FujiApplesDataModule(root=root, num_workers=0).setup("fit")

    dm = FujiApplesDataModule(root=root, num_workers=0, on_bad_data="skip", test_fraction=0, val_fraction=0)
    with pytest.warns(UserWarning, match=r"Skipped 1 bad "):
        dm.setup("fit")
    assert [line.split(": ")[0] for line in dm.skipped_files] == [str(folder / "_MG_0001_02.jpg")]
    assert [s.image.name for s in dm.splits()["train"]] == ["_MG_0001_01.jpg"]
    assert len(dm.check()) == 1

    noise = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "_MG_0001_01.jpg")
    whole = (folder / "_MG_0001_01.jpg").read_bytes()
    (folder / "_MG_0001_01.jpg").write_bytes(whole[: int(len(whole) * 0.7)])  # truncated; the header reads
    assert any(p.startswith(f"{folder / '_MG_0001_01.jpg'}: cannot be decoded") for p in dm.check())


def test_missing_root_says_where_fuji_sfm_goes(tmp_path: Path) -> None:
    dm = FujiApplesDataModule(root=tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError,
        match=r"nowhere does not exist: download Fuji-SfM .*1-Mask-set/training_images_and_annotations",
    ):
        dm.setup("fit")
    assert "download Fuji-SfM" in dm.check()[0]
    with pytest.raises(ValueError, match="index 0 must be 'background'"):
        FujiApplesDataModule(class_names=["apple"])


# ---------------------------------------------------------------------- the Fuji-SfM layout
def test_synthetic_orchard_through_the_real_parser(tiny_orchard: Path) -> None:
    dm = FujiApplesDataModule(
        root=tiny_orchard, min_size=72, max_size=96, batch_size=2, num_workers=0, seed=3
    )
    dm.setup("fit")
    card = dm.describe()
    assert (
        card["format"] == "via"
        and card["name"] == "synthetic orchard"
        and card["class_names"] == ["background", "apple"]
    )
    assert {s: card["splits"][s]["images"] for s in ("train", "val", "test")} == {
        "train": 7,
        "val": 3,
        "test": 1,
    }
    assert card["instances"]["train"] == card["splits"]["train"]["per_class"]["apple"] > 7
    assert card["images_without_instances"]["train"] >= 1 and card["mask_area"]["train"]["min"] > 20
    json.dumps(card)
    files = dm.dataset_files()
    assert files == sorted(files) and len(files) == 2 * 11 and {f.suffix for f in files} == {".jpg", ".csv"}
    samples = dm.sample_images(per_class=2)
    assert len(samples["apple"]) == 2 and "background" not in samples and dm.check() == []
    assert (
        FujiApplesDataModule(root=tiny_orchard, seed=3).splits()["test"][0].image
        == dm.splits()["test"][0].image
    )

    images, targets = next(iter(dm.train_dataloader()))
    for image, target in zip(images, targets, strict=True):
        assert (
            image.dtype == torch.float32
            and 0 <= image.min()
            and image.max() <= 1
            and min(image.shape[1:]) <= 96
        )
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape[1:] == image.shape[1:]
        assert target["boxes"].shape == (len(target["labels"]), 4) and set(target["labels"].tolist()) <= {1}


def test_an_image_without_apples_is_a_negative_sample(tmp_path: Path) -> None:
    root = fuji_folder(tmp_path, HEADER + via_row("_MG_0001_01.jpg", 0, 0, {}))
    dm = FujiApplesDataModule(root=root, num_workers=0, val_fraction=0, test_fraction=0)
    dm.setup("fit")
    image, target = dm.datasets["train"][0]
    assert image.shape[1] in scale_jitter_sizes(1024, (0.8, 1.2)) or image.shape[2] == 1536  # max_size
    assert abs(image.shape[2] - image.shape[1] * 4 / 3) <= 1
    assert target["boxes"].shape == (0, 4) and target["masks"].shape == (0, *image.shape[1:])
    assert dm.describe()["images_without_instances"]["train"] == 1


def test_the_synthetic_orchard_is_deterministic(tmp_path: Path) -> None:
    spec = SyntheticOrchard(train_images=2, val_images=1, width=64, height=48, seed=5)
    a, b = spec.write(tmp_path / "a"), spec.write(tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 7 and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    dm = FujiApplesDataModule(root=tmp_path / "c", synthetic=spec)
    assert dm.check() == [] and (tmp_path / "c" / TRAIN / "_MG_3000_01.jpg").is_file()  # written when missing


# ---------------------------------------------------------------------- COCO
def coco_set(root: Path) -> dict:
    """Three 40x30 images: a polygon apple, an RLE apple (compressed) plus an uncompressed one, a negative."""
    images = root / "images"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(images / name)
    block = np.zeros((30, 40), dtype=np.uint8, order="F")
    block[5:15, 20:32] = 1
    compressed = mask_utils.encode(block)
    compressed["counts"] = compressed["counts"].decode()
    uncompressed = {"size": [30, 40], "counts": [30 * 2 + 3, 4, 26, 4, 30 * 40 - (30 * 2 + 3) - 34]}
    data = {
        "images": [
            {"id": i, "file_name": n, "width": 40, "height": 30}
            for i, n in enumerate(["a.jpg", "b.jpg", "c.jpg"], 1)
        ],
        "categories": [{"id": 7, "name": "apple"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 7,
                "iscrowd": 0,
                "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]],
            },
            {"id": 2, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": compressed},
            {"id": 3, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": uncompressed},
        ],
    }
    (root / "annotations.json").write_text(json.dumps(data))
    return data


def test_coco_polygons_and_rle(tmp_path: Path) -> None:
    coco_set(tmp_path / "coco")
    dm = FujiApplesDataModule(root=tmp_path / "coco", num_workers=0, val_fraction=0, test_fraction=0)
    by_name = {s.image.name: s for s in dm.splits()["train"]}
    assert dm.describe()["format"] == "coco" and dm.describe()["images_without_instances"]["train"] == 1
    polygon = by_name["a.jpg"].masks()
    assert polygon.shape == (1, 30, 40) and polygon[0, 3:9, 3:11].all() and polygon.sum() < 11 * 9
    rle = by_name["b.jpg"].masks()
    assert rle.shape == (2, 30, 40) and rle[0, 5:15, 20:32].all() and rle[0].sum() == 120
    assert (
        rle[1].sum() == 8 and rle[1, 3:7, 2].all() and rle[1, 3:7, 3].all()
    )  # uncompressed counts, column-major
    assert by_name["c.jpg"].masks().shape == (0, 30, 40)
    assert boxes_from_masks(torch.from_numpy(rle)).tolist()[0] == [20.0, 5.0, 32.0, 15.0]


def test_coco_problems_are_named(tmp_path: Path) -> None:
    data = coco_set(tmp_path / "coco")
    data["categories"][0]["name"] = "fuji"
    data["annotations"][0]["segmentation"] = [[1, 1, 5, 5]]
    (tmp_path / "coco" / "annotations.json").write_text(json.dumps(data))
    problems = FujiApplesDataModule(root=tmp_path / "coco").check()
    assert any("category 'fuji' (id 7) is not in data.class_names" in p for p in problems)
    assert any("annotation id" in p and "annotations.json" in p for p in problems)
    shutil.rmtree(tmp_path / "coco" / "images")
    assert any("image file is missing" in p for p in FujiApplesDataModule(root=tmp_path / "coco").check())


# ---------------------------------------------------------------------- transforms
def test_transforms_keep_boxes_and_masks_aligned(tiny_orchard: Path, tmp_path: Path) -> None:
    root = copy_of(tiny_orchard, tmp_path / "orchard")
    dm = FujiApplesDataModule(root=root, num_workers=0, test_fraction=0)
    sample = next(s for s in dm.splits()["train"] if len(s.instances) >= 2)
    augment = train_transforms(min_size=144, max_size=400, scale_range=(0.5, 1.5), hflip=1.0)
    torch.manual_seed(0)
    for transform in (augment, augment, eval_transforms(min_size=50, max_size=60)):
        image, target = InstanceDataset([sample], transform)[0]
        from_masks = boxes_from_masks(target["masks"])
        assert target["masks"].shape[1:] == image.shape[1:] and len(target["boxes"]) == len(sample.instances)
        assert torch.allclose(target["boxes"], from_masks, atol=2.5), (target["boxes"], from_masks)
    _, flipped = InstanceDataset([sample], train_transforms(72, 96, (1.0, 1.0), hflip=1.0, color_jitter=0))[0]
    assert torch.equal(flipped["masks"], torch.from_numpy(sample.masks()).flip(-1))
