"""The registered pyfunc as a client calls it: raw images in, class names or RLE masks out."""

from __future__ import annotations

import json

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from pycocotools import mask as coco_mask
from registry_testing import migrated_store, use_mlflow_uri  # noqa: F401 - fixture
from serving_testing import Registered, b64, fuji_model, grocery_model  # noqa: F401 - fixtures

from harvest.serving.model import InputError, decode_image, input_values


def _pyfunc(model: Registered, monkeypatch: pytest.MonkeyPatch) -> mlflow.pyfunc.PyFuncModel:
    use_mlflow_uri(monkeypatch, model.uri)
    return mlflow.pyfunc.load_model(f"models:/{model.ref}")


def test_the_grocery_pyfunc_takes_base64_paths_and_arrays_like_the_data_module(
    grocery_model: Registered,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    pyfunc = _pyfunc(grocery_model, monkeypatch)
    meta = pyfunc.metadata
    assert [c["name"] for c in meta.get_input_schema().to_dict()] == ["image"]
    assert {c["name"] for c in meta.get_output_schema().to_dict()} >= {"class_name", "confidence", "probabilities"}
    paths = grocery_model.images[:6]
    served = pyfunc.predict(pd.DataFrame({"image": [b64(p) for p in paths]}))

    module = grocery_model.cli.model.eval()  # what `harvest predict` computes on the same files
    datamodule = grocery_model.cli.datamodule
    loader_images, _, loader_paths = next(iter(datamodule.test_dataloader()))
    expected = {p: r for p, r in zip(loader_paths, module.classify(loader_images), strict=True)}
    for path, record in zip(paths, served, strict=True):
        want = expected[str(path)]
        assert record["class_name"] == want["class_name"] in datamodule.class_names
        assert record["class_index"] == want["class_index"]
        assert record["confidence"] == pytest.approx(want["confidence"], abs=1e-5)
        assert set(record["probabilities"]) == set(datamodule.class_names)

    by_path = pyfunc.predict(pd.DataFrame({"image": [str(p) for p in paths[:2]]}))
    pixels = [np.asarray(Image.open(p).convert("RGB")) for p in paths[:2]]
    by_array = pyfunc.predict(pd.DataFrame({"image": pixels}))
    assert (
        [r["class_name"] for r in by_path]
        == [r["class_name"] for r in by_array]
        == [r["class_name"] for r in served[:2]]
    )
    assert json.loads(json.dumps(served))  # what the scoring server writes

    with pytest.raises(Exception, match=r"input 1: 'bm90IGFuIGltYWdl' is neither an existing file nor base64|input 1"):
        pyfunc.predict(pd.DataFrame({"image": [b64(paths[0]), "bm90IGFuIGltYWdl"]}))


def test_the_fuji_pyfunc_returns_boxes_class_names_and_rle_masks(
    fuji_model: Registered,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    pyfunc = _pyfunc(fuji_model, monkeypatch)
    path = fuji_model.images[0]
    (record,) = pyfunc.predict(pd.DataFrame({"image": [b64(path)]}))
    width, height = Image.open(path).size
    assert record["image_size"] == [height, width]
    module = fuji_model.cli.model.eval()
    transform = fuji_model.cli.datamodule.inference_transform()
    with torch.inference_mode():
        (expected,) = module.predict_step([transform(Image.open(path).convert("RGB"))])
    assert len(record["boxes"]) == len(record["masks"]) == len(expected["boxes"]) > 0
    assert np.allclose(record["boxes"], expected["boxes"].numpy(), atol=0.01)
    assert record["class_names"] == ["apple"] * len(expected["labels"])
    decoded = coco_mask.decode(record["masks"])  # H x W x N
    assert decoded.shape == (height, width, len(expected["masks"]))
    assert np.array_equal(decoded.transpose(2, 0, 1).astype(bool), expected["masks"].numpy())
    dense = len(json.dumps(expected["masks"].tolist()))
    assert len(json.dumps(record)) < dense / 5  # compact: RLE instead of dense boolean lists


def test_registered_models_carry_harvest_code_requirements_and_an_input_example(
    grocery_model: Registered,
    tmp_path,  # noqa: F811
) -> None:
    from harvest.registry.api import open_registry

    package = open_registry(grocery_model.uri).download(grocery_model.ref, tmp_path)
    model_dir = package.parents[1]
    requirements = (model_dir / "requirements.txt").read_text().split()
    names = {r.split("==")[0].lower() for r in requirements}
    assert {"torch", "torchvision", "lightning", "pycocotools", "pillow", "pandas", "mlflow"} <= names
    assert all("==" in r for r in requirements if not r.startswith("-"))
    assert {p.name for p in (model_dir / "code").iterdir()} == {
        "harvest",
        "lightning_modules",
        "datamodules",
        "callbacks",
    }
    assert not list((model_dir / "code").rglob("__pycache__"))
    example = json.loads((model_dir / "serving_input_example.json").read_text())
    (row,) = example["dataframe_split"]["data"]
    assert decode_image(row[0]).size == (64, 48)


def test_bad_inputs_are_named_with_the_fix() -> None:
    with pytest.raises(InputError, match=r"no column 'image' in the input \(columns: pixels\)"):
        input_values(pd.DataFrame({"pixels": [1]}))
    with pytest.raises(InputError, match=r"input 3: an array of dtype float32 and shape \(4, 4, 3\); send base64"):
        decode_image(np.zeros((4, 4, 3), np.float32), 3)
    with pytest.raises(InputError, match=r"input 0: the base64 data is not a readable image"):
        decode_image("aGVsbG8gd29ybGQ=")
