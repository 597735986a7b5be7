"""`harvest registry export`: ONNX and TorchScript files that onnxruntime / torch.jit run like PyTorch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from registry_testing import migrated_store  # noqa: F401 - fixture
from serving_testing import Registered, fuji_model, grocery_model, model_cache  # noqa: F401 - fixtures

from harvest.registry_cli import main as registry_main

pytestmark = pytest.mark.usefixtures("model_cache")  # never the user's cache


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_classifier_exports_and_matches_pytorch(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / f"grocer.{fmt}"
    folder = grocery_model.images[0].parents[1]  # the test split: real images of every class
    registry_main(
        ["export", grocery_model.ref, "--format", fmt, "--output", str(output), "--images", str(folder)]
        + ["--tracking-uri", grocery_model.uri]
    )
    sidecar = json.loads(output.with_name(output.name + ".json").read_text())
    assert sidecar["check"]["passed"] and sidecar["check"]["same_top_class"]
    assert sidecar["check"]["max_abs_diff_probabilities"] <= 1e-4
    assert sidecar["class_names"] == grocery_model.cli.datamodule.class_names
    assert "max abs difference against PyTorch: probabilities" in capsys.readouterr().out

    # the exported file on its own, against the in-memory model on the data module's test batch
    images, _, _ = next(iter(grocery_model.cli.datamodule.test_dataloader()))
    module = grocery_model.cli.model.eval()
    with torch.inference_mode():
        expected = module.head(module.encoder(images)).softmax(1).numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        probabilities = session.run(["probabilities"], {"image": images.numpy()})[0]
    else:
        probabilities = torch.jit.load(str(output))(images)[0].detach().numpy()
    assert np.abs(probabilities - expected).max() < 1e-4
    assert (probabilities.argmax(1) == expected.argmax(1)).all()


def test_mask_rcnn_exports_to_onnx_and_finds_the_same_boxes(
    fuji_model: Registered,  # noqa: F811
    tmp_path: Path,
) -> None:
    output = tmp_path / "fuji.onnx"
    folder = fuji_model.images[0].parent
    registry_main(
        ["export", fuji_model.ref, "--format", "onnx", "--output", str(output), "--images", str(folder)]
        + ["--tracking-uri", fuji_model.uri]
    )
    check = json.loads(output.with_name("fuji.onnx.json").read_text())["check"]
    assert check["passed"] and check["detections"] == check["exported_detections"] and sum(check["detections"]) > 0
    assert check["max_abs_diff_boxes"] <= 0.5

    import onnxruntime

    image = Image.open(fuji_model.images[0]).convert("RGB")
    pixels = fuji_model.cli.datamodule.inference_transform()(image)
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    boxes, labels, scores, masks = session.run(None, {"image": pixels.numpy()})
    with torch.inference_mode():
        (expected,) = fuji_model.cli.model.eval().predict_step([pixels])
    assert len(boxes) == len(expected["boxes"]) and np.abs(boxes - expected["boxes"].numpy()).max() < 0.5
    assert masks.shape[-2:] == tuple(pixels.shape[-2:])
