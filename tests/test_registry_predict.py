"""`harvest registry predict` on a folder, for both pipelines, and the SHA-256-keyed model cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO
from registry_testing import migrated_store  # noqa: F401 - fixture
from serving_testing import Registered, fuji_model, grocery_model, model_cache  # noqa: F401 - fixtures

from harvest.commands.registry import main as registry_main
from harvest.registry.api import open_registry
from harvest.registry.cache import cache_root, cached_package


def _folder(images: list[Path], dst: Path) -> Path:
    (dst / "day1").mkdir(parents=True)
    for i, path in enumerate(images):
        shutil.copy(path, (dst / "day1" if i % 2 else dst) / f"{i:02d}_{path.name}")
    return dst


def test_registry_predict_writes_one_line_per_image_with_its_path(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
    model_cache: Path,
) -> None:
    folder = _folder(grocery_model.images[:5], tmp_path / "incoming")
    output = tmp_path / "out" / "predictions.jsonl"
    args = ["predict", grocery_model.ref, "--images", str(folder), "--output", str(output)]
    registry_main([*args, "--tracking-uri", grocery_model.uri])
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(r["path"] for r in records) == sorted(str(p) for p in folder.rglob("*.jpg"))
    names = set(grocery_model.cli.datamodule.class_names)
    assert all(r["class_name"] in names and set(r["probabilities"]) == names for r in records)
    assert all(r["confidence"] == max(r["probabilities"].values()) for r in records)

    registry_main([*args, "--tracking-uri", grocery_model.uri])  # again: the cached copy is reused
    assert len(list(cache_root().iterdir())) == 1
    assert [json.loads(line) for line in output.read_text().splitlines()] == records


def test_registry_predict_fuji_writes_compact_rle_and_a_coco_results_file(
    fuji_model: Registered,  # noqa: F811
    tmp_path: Path,
    model_cache: Path,
) -> None:
    folder = _folder(fuji_model.images[:4], tmp_path / "orchard")
    output, coco = tmp_path / "detections.jsonl", tmp_path / "detections.json"
    registry_main(
        ["predict", fuji_model.ref, "--images", str(folder), "--output", str(output), "--coco", str(coco)]
        + ["--overlays", str(tmp_path / "overlays"), "--min-score", "0.0", "--tracking-uri", fuji_model.uri]
    )
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 4 and all(isinstance(m["counts"], str) for r in records for m in r["masks"])
    assert all(set(r["class_names"]) <= {"apple"} for r in records)
    ground = COCO(str(tmp_path / "detections.images.json"))
    results = ground.loadRes(str(coco))
    assert len(results.getAnnIds()) == sum(len(r["boxes"]) for r in records) > 0
    first = results.loadAnns(results.getAnnIds())[0]
    assert results.annToMask(first).shape == (first["segmentation"]["size"][0], first["segmentation"]["size"][1])
    assert len(list((tmp_path / "overlays").glob("*.png"))) == 4
    per_image = output.stat().st_size / len(records)
    assert per_image < 20_000, per_image  # compact: the dense boolean masks took megabytes


def test_registry_predict_names_an_empty_folder_and_a_bad_image(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
    model_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        registry_main(
            ["predict", grocery_model.ref, "--images", str(tmp_path / "empty"), "--tracking-uri", grocery_model.uri]
        )
    assert "no .jpg/.jpeg/.png files there" in capsys.readouterr().err
    folder = _folder(grocery_model.images[:2], tmp_path / "bad")
    (folder / "zz_broken.jpg").write_bytes(b"not a jpeg")
    output = tmp_path / "bad.jsonl"
    with pytest.raises(SystemExit):
        registry_main(
            ["predict", grocery_model.ref, "--images", str(folder), "--output", str(output), "--batch-size", "1"]
            + ["--tracking-uri", grocery_model.uri]
        )
    (error,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("harvest registry predict:")]
    assert "zz_broken.jpg is not a readable image" in error and "send base64-encoded JPEG/PNG bytes" in error
    assert len(output.read_text().splitlines()) == 2  # the images before it are kept


def test_the_model_cache_downloads_once_and_replaces_a_changed_copy(
    grocery_model: Registered,  # noqa: F811
    model_cache: Path,
) -> None:
    registry = open_registry(grocery_model.uri)
    first = cached_package(registry, grocery_model.ref)
    second = cached_package(registry, grocery_model.ref)
    assert first[2] is True and second[2] is False and first[1] == second[1]
    (first[1] / "config.yaml").write_text("changed: true\n")  # a damaged cached copy is refused and replaced
    third = cached_package(registry, grocery_model.ref)
    assert third[2] is True and "changed" not in (third[1] / "config.yaml").read_text()
    assert len(list(model_cache.iterdir())) == 1
