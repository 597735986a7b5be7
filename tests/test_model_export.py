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

from harvest.commands.registry import main as registry_main
from harvest.serving.export import export_model
from lightning_modules.ssl_export import ServedPredictor

pytestmark = pytest.mark.usefixtures("model_cache")  # never the user's cache


def _exported_probabilities(fmt: str, output: Path, images: torch.Tensor) -> np.ndarray:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"image": images.numpy()})[0]
    return torch.jit.load(str(output))(images)[0].detach().numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_classifier_exports_the_served_predictor_and_matches_registry_predict(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    output = tmp_path / f"grocer.{fmt}"
    folder = grocery_model.images[0].parents[1]  # the test split: real images of every class
    common = ["--images", str(folder), "--tracking-uri", grocery_model.uri]
    registry_main(["export", grocery_model.ref, "--format", fmt, "--output", str(output), *common])
    sidecar = json.loads(output.with_name(output.name + ".json").read_text())
    module = grocery_model.cli.model.eval()
    served = module.hparams.predict_algorithm or module.run_results["best_algorithm"]
    assert served in module.ssl.fitted()  # the fixture's run fitted SSL predictors: not the CNN head
    assert sidecar["algorithm"] == served
    assert sidecar["check"]["passed"] and sidecar["check"]["same_top_class"]
    assert sidecar["check"]["max_abs_diff_probabilities"] <= 1e-4
    assert sidecar["class_names"] == grocery_model.cli.datamodule.class_names
    assert f"({served})" in capsys.readouterr().out

    # the exported file on its own against `harvest registry predict` on the same files
    predictions = tmp_path / "predictions.jsonl"
    registry_main(["predict", grocery_model.ref, "--output", str(predictions), *common])
    served_records = {r["path"]: r for r in map(json.loads, predictions.read_text().splitlines())}
    assert {r["algorithm"] for r in served_records.values()} == {served}
    checked = 0
    for images, _, paths in grocery_model.cli.datamodule.test_dataloader():
        probabilities = _exported_probabilities(fmt, output, images)
        expected = np.array([list(served_records[p]["probabilities"].values()) for p in paths])
        assert (probabilities.argmax(1) == expected.argmax(1)).all()
        assert np.abs(probabilities - expected).max() < 1e-4
        with torch.inference_mode():  # and against the module's own predict in memory
            mine = module.classify(images, list(paths))
        assert [r["class_index"] for r in mine] == probabilities.argmax(1).tolist()
        checked += len(paths)
    assert checked == len(served_records) == len(grocery_model.images)


def test_head_cnn_exports_the_cnn_head(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
) -> None:
    output = tmp_path / "head.onnx"
    folder = grocery_model.images[0].parents[1]
    registry_main(
        ["export", grocery_model.ref, "--output", str(output), "--images", str(folder), "--head", "cnn"]
        + ["--tracking-uri", grocery_model.uri]
    )
    sidecar = json.loads(output.with_name("head.onnx.json").read_text())
    assert sidecar["algorithm"] == "cnn_head" and sidecar["check"]["passed"]
    images, _, _ = next(iter(grocery_model.cli.datamodule.test_dataloader()))
    module = grocery_model.cli.model.eval()
    with torch.inference_mode():
        expected = module.head(module.encoder(images)).softmax(1).numpy()
    probabilities = _exported_probabilities("onnx", output, images)
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


def _fresh(module: torch.nn.Module, **changes: object) -> torch.nn.Module:
    """A new module of ``module``'s class and hyperparameters (with ``changes``), its SSL state empty."""
    hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
    return type(module)(**{**hparams, **changes})


def _every_predictor(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every fitted algorithm of ``module``, and label spreading refitted with the rbf kernel on a copy."""
    rbf = _fresh(module, kernel="rbf")
    rbf.load_state_dict(module.state_dict())
    rbf.eval()
    targets = module.ssl.training_labels("label_spreading").clone()
    targets[1::2] = -1  # half unlabeled
    rbf.fit_ssl(module.ssl.features.float(), targets)
    return [(name, module) for name in module.ssl.fitted()] + [("label_spreading", rbf)]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_ssl_predictor_exports_and_predicts_like_the_module(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
    fmt: str,
) -> None:
    module = grocery_model.cli.model.eval()
    images, _, _ = next(iter(grocery_model.cli.datamodule.test_dataloader()))
    predictors = _every_predictor(module)
    assert sorted({name for name, _ in predictors}) == ["label_propagation", "label_spreading", "self_training"]
    for i, (name, owner) in enumerate(predictors):
        graph = ServedPredictor(owner, name).eval()
        output = tmp_path / f"{name}-{i}.{fmt}"
        check = export_model(owner, fmt, output, list(images), False, graph)
        assert check["passed"], (name, owner.params.kernel, check)
        with torch.inference_mode():
            expected = np.array([list(r["probabilities"].values()) for r in owner.classify(images, algorithm=name)])
        probabilities = _exported_probabilities(fmt, output, images)
        assert (probabilities.argmax(1) == expected.argmax(1)).all(), (name, owner.params.kernel)
        assert np.abs(probabilities - expected).max() < 1e-4


def test_an_unfitted_predictor_is_refused_with_the_fix(grocery_model: Registered) -> None:  # noqa: F811
    empty = _fresh(grocery_model.cli.model)  # nothing fitted
    with pytest.raises(RuntimeError, match="--head cnn"):
        ServedPredictor(empty, "label_spreading")
