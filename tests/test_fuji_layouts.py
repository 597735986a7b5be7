"""Data sets as annotation tools write them: every detected layout, explicit paths, VIA exports and shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datamodules import FujiApplesDataModule
from datamodules.fuji_apples import DataError

W, H = 40, 30
VIA_HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes\n"


def image(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), 90, dtype=np.uint8)).save(path)
    return path.name


def coco(path: Path, names: list[str], image_dir: Path | None = None) -> Path:
    """A COCO file with one square apple per image; the images written into ``image_dir``."""
    for name in names:
        image((image_dir or path.parent) / name)
    data = {
        "images": [{"id": i, "file_name": n, "width": W, "height": H} for i, n in enumerate(names, 1)],
        "categories": [{"id": 1, "name": "apple"}],
        "annotations": [
            {"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]]}
            for i in range(1, len(names) + 1)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def splits_of(root: Path, **kwargs: object) -> tuple[str, dict[str, list[str]]]:
    dm = FujiApplesDataModule(root=root, num_workers=0, **kwargs)
    found = {split: sorted(s.image.name for s in samples) for split, samples in dm.splits().items()}
    return dm.describe()["layout"], found


def test_the_original_projects_trainingset_and_testset(tmp_path: Path) -> None:
    coco(tmp_path / "trainingset" / "annotations.json", ["a.jpg", "b.jpg"], tmp_path / "trainingset" / "JPEGImages")
    coco(tmp_path / "testset" / "annotations.json", ["t.jpg"], tmp_path / "testset" / "JPEGImages")
    layout, found = splits_of(tmp_path)
    assert layout == "original project"
    assert found == {"train": ["a.jpg", "b.jpg"], "val": ["t.jpg"], "test": ["t.jpg"]}  # testset: val and test
    assert FujiApplesDataModule(root=tmp_path).check() == []


def test_cvat_coco_export_one_subset_and_several(tmp_path: Path) -> None:
    one = tmp_path / "one"
    coco(one / "annotations" / "instances_default.json", [f"{i}.jpg" for i in range(5)], one / "images")
    layout, found = splits_of(one, val_fraction=0.2, test_fraction=0.2)
    assert layout == "CVAT / COCO 2017" and [len(found[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    several = tmp_path / "several"
    coco(several / "annotations" / "instances_train.json", ["a.jpg"], several / "images" / "train")
    coco(several / "annotations" / "instances_validation.json", ["v.jpg"], several / "images" / "validation")
    assert splits_of(several, test_fraction=0)[1] == {"train": ["a.jpg"], "val": ["v.jpg"], "test": []}


def test_coco_2017_layout(tmp_path: Path) -> None:
    coco(tmp_path / "annotations" / "instances_train2017.json", ["1.jpg", "2.jpg"], tmp_path / "train2017")
    coco(tmp_path / "annotations" / "instances_val2017.json", ["3.jpg"], tmp_path / "val2017")
    layout, found = splits_of(tmp_path, test_fraction=0.5)
    assert layout == "CVAT / COCO 2017" and found["val"] == ["3.jpg"]
    assert sorted(found["train"] + found["test"]) == ["1.jpg", "2.jpg"] and len(found["test"]) == 1  # held out


def test_roboflow_coco_export(tmp_path: Path) -> None:
    for split, names in (("train", ["a.jpg", "b.jpg"]), ("valid", ["v.jpg"]), ("test", ["t.jpg"])):
        coco(tmp_path / split / "_annotations.coco.json", names)
    layout, found = splits_of(tmp_path)
    assert layout == "Roboflow" and found == {"train": ["a.jpg", "b.jpg"], "val": ["v.jpg"], "test": ["t.jpg"]}


def test_explicit_paths_per_split_relative_to_the_root(tmp_path: Path) -> None:
    coco(tmp_path / "labels" / "train.json", ["a.jpg", "b.jpg"], tmp_path / "pics" / "train")
    coco(tmp_path / "labels" / "val.json", ["v.jpg"], tmp_path / "pics" / "val")
    paths = {"train_annotations": "labels/train.json", "train_images": "pics/train"}
    paths |= {"val_annotations": "labels/val.json", "val_images": "pics/val"}
    layout, found = splits_of(tmp_path, test_fraction=0, **paths)
    assert layout == "explicit paths" and found == {"train": ["a.jpg", "b.jpg"], "val": ["v.jpg"], "test": []}
    card = FujiApplesDataModule(root=tmp_path, **paths).describe()
    assert card["sources"]["val"] == {"annotations": "labels/val.json", "images": "pics/val"}
    with pytest.raises(FileNotFoundError, match=r"data.train_annotations=.*labels/nope.json does not exist"):
        FujiApplesDataModule(root=tmp_path, train_annotations="labels/nope.json").splits()


def test_nothing_found_lists_every_layout_looked_for(tmp_path: Path) -> None:
    image(tmp_path / "photos" / "a.jpg")
    with pytest.raises(FileNotFoundError) as info:
        FujiApplesDataModule(root=tmp_path).splits()
    message = str(info.value)
    for looked_for in (
        "1-Mask-set/training_images_and_annotations",
        "trainingset/annotations.json + trainingset/JPEGImages/",
        "annotations/instances_<subset>.json",
        "{train,valid,test}/_annotations.coco.json",
        "annotations.json (+ images/)",
        "VIA exports beside images",
    ):
        assert looked_for in message
    assert "\n" not in message


# ---------------------------------------------------------------------- VIA exports
def shapes() -> list[dict]:
    return [
        {"name": "polygon", "all_points_x": [2, 10, 10, 2], "all_points_y": [2, 2, 8, 8]},
        {"name": "rect", "x": 12, "y": 2, "width": 6, "height": 5},
        {"name": "circle", "cx": 25, "cy": 8, "r": 4},
        {"name": "ellipse", "cx": 30, "cy": 20, "rx": 6, "ry": 3, "theta": 0.5},
    ]


def csv_row(name: str, count: int, index: int, shape: dict, attributes: dict | None = None) -> str:
    def quoted(value: dict) -> str:
        return '"' + json.dumps(value).replace('"', '""') + '"'

    return f"{name},1234,\"{{}}\",{count},{index},{quoted(shape)},{quoted(attributes or {})}\n"


def via_json_entry(name: str, regions: list[dict], version: int) -> dict:
    listed = [{"shape_attributes": s, "region_attributes": a} for s, a in regions]
    return {
        "filename": name,
        "size": 1234,
        "regions": {str(i): r for i, r in enumerate(listed)} if version == 1 else listed,
        "file_attributes": {},
    }


@pytest.mark.parametrize("export", ["csv-2.x", "csv-1.x", "json-1.x", "json-2.x-project"])
def test_one_via_export_for_a_whole_folder_with_every_area_shape(tmp_path: Path, export: str) -> None:
    names = [image(tmp_path / "train" / f"img{i}.jpg") for i in range(3)]  # img2: no regions
    regions = {names[0]: [(s, {}) for s in shapes()], names[1]: [(shapes()[0], {})], names[2]: []}
    folder = tmp_path / "train"
    if export.startswith("csv"):
        text = ("#" if export == "csv-1.x" else "") + VIA_HEADER
        for name, found in regions.items():
            rows = [csv_row(name, len(found), i, s) for i, (s, _) in enumerate(found)]
            text += "".join(rows) or csv_row(name, 0, 0, {})
        (folder / "via_export_csv.csv").write_text(text)
    else:
        version = 1 if export == "json-1.x" else 2
        data = {f"{n}1234": via_json_entry(n, r, version) for n, r in regions.items()}
        if version == 2:
            data = {"_via_settings": {}, "_via_img_metadata": data, "_via_attributes": {}}
        (folder / "via_region_data.json").write_text(json.dumps(data))
    dm = FujiApplesDataModule(root=tmp_path, num_workers=0, val_fraction=0, test_fraction=0)
    samples = {s.image.name: s for s in dm.splits()["train"]}
    assert dm.describe()["layout"] == "VIA" and dm.check() == []
    masks = samples["img0.jpg"].masks()
    areas = masks.reshape(4, -1).sum(1)
    expected = [8 * 6, 6 * 5, np.pi * 4**2, np.pi * 6 * 3]  # polygon, rect, circle, ellipse
    assert masks.shape == (4, H, W) and np.allclose(areas, expected, rtol=0.35), areas
    assert masks[1, 3:6, 13:17].all() and masks[2, 8, 25] and masks[3, 20, 30]  # each where it was drawn
    assert len(samples["img1.jpg"].instances) == 1 and samples["img2.jpg"].instances == []


def test_points_and_polylines_are_reported_then_skipped_or_refused(tmp_path: Path) -> None:
    name = image(tmp_path / "img.jpg")
    point = {"name": "point", "cx": 5, "cy": 5}
    polyline = {"name": "polyline", "all_points_x": [1, 5, 9], "all_points_y": [1, 5, 1]}
    text = VIA_HEADER + "".join(csv_row(name, 4, i, s) for i, s in enumerate([shapes()[0], point, point, polyline]))
    (tmp_path / "export.csv").write_text(text)
    message = r"export.csv: 2 point and 1 polyline region\(s\) enclose no area"
    with pytest.raises(DataError, match=message):
        FujiApplesDataModule(root=tmp_path, val_fraction=0, test_fraction=0).splits()
    dm = FujiApplesDataModule(root=tmp_path, val_fraction=0, test_fraction=0, on_bad_data="skip")
    with pytest.warns(UserWarning, match="Skipped 1 bad annotation file"):
        samples = dm.splits()["train"]
    assert len(dm.skipped_files) == 1 and re.search(message, dm.skipped_files[0])  # named once, in the card too
    assert len(samples) == 1 and len(samples[0].instances) == 1  # the image kept, its polygon too


def test_a_region_attribute_names_the_class(tmp_path: Path) -> None:
    name = image(tmp_path / "img.jpg")
    kinds = [{"type": "apple"}, {"type": "leaf"}, {"type": {"leaf": True, "apple": False}}, {"type": "apple"}]
    text = VIA_HEADER + "".join(csv_row(name, 4, i, s, a) for i, (s, a) in enumerate(zip(shapes(), kinds, strict=True)))
    (tmp_path / "export.csv").write_text(text)
    classes = ["background", "apple", "leaf"]
    dm = FujiApplesDataModule(
        root=tmp_path, class_names=classes, class_attribute="type", val_fraction=0, test_fraction=0
    )
    assert [i.label for i in dm.splits()["train"][0].instances] == [1, 2, 2, 1]
    assert dm.describe()["splits"]["train"]["per_class"] == {"apple": 2, "leaf": 2}
    other = FujiApplesDataModule(root=tmp_path, class_names=["background", "apple"], class_attribute="type")
    assert any("class 'leaf' (region attribute 'type') is not in data.class_names" in p for p in other.check())


# ---------------------------------------------------------------------- COCO errors
def test_coco_errors_name_the_file_the_image_id_and_the_key(tmp_path: Path) -> None:
    path = coco(tmp_path / "annotations.json", ["a.jpg", "b.jpg"], tmp_path / "images")
    data = json.loads(path.read_text())
    del data["images"][1]["file_name"]
    del data["annotations"][0]["category_id"]
    path.write_text(json.dumps(data))
    problems = FujiApplesDataModule(root=tmp_path).check()
    assert any(p.startswith(f"{path}: image id 2 has no 'file_name'") for p in problems)
    assert any(p.startswith(f"{path}, image id 1, annotation id 1: no 'category_id'") for p in problems)
    del data["categories"]
    path.write_text(json.dumps(data))
    (line,) = FujiApplesDataModule(root=tmp_path).check()  # one line for the file, not one per annotation
    assert line.startswith(f"{path}: no 'categories' list")


def test_crowd_annotations_are_kept_for_evaluation_but_never_trained_on(tmp_path: Path) -> None:
    crowd = {"size": [H, W], "counts": [H * 20, H * 10, H * (W - 30)]}  # columns 20..29, uncompressed
    for split in ("train", "val"):
        path = coco(tmp_path / split / "annotations.json", ["a.jpg"], tmp_path / split / "images")
        data = json.loads(path.read_text())
        data["annotations"].append({"id": 9, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": crowd})
        data["annotations"][0].update(area=77.5, bbox=[2, 2, 10, 8])
        path.write_text(json.dumps(data))
    dm = FujiApplesDataModule(root=tmp_path, test_fraction=0, num_workers=0)
    dm.setup("fit")
    for split in ("train", "val"):
        assert dm.datasets[split][0][1]["labels"].tolist() == [1]  # the crowd region is no training target
    annotations = dm.datasets["val"][0][1]["coco"]["annotations"]
    assert [a["iscrowd"] for a in annotations] == [0, 1] and annotations[0]["area"] == 77.5
    assert annotations[1]["area"] == H * 10 and annotations[0]["bbox"] == [2, 2, 10, 8]
    assert "coco" not in dm.datasets["train"][0][1]
