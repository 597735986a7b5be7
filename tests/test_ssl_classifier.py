"""SemiSupervisedClassifier and its scikit-learn side: algorithms, safe serialisation, backbones, reload."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GroceryRun
from sklearn.preprocessing import FunctionTransformer

from datamodules.groceries import GroceriesDataModule
from lightning_modules import ssl_algorithms as ssl
from lightning_modules.backbones import build_backbone
from lightning_modules.ssl_classifier import SemiSupervisedClassifier


def _blobs(n_per_class: int = 40, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, size=(classes, 16))
    labels = np.repeat(np.arange(classes), n_per_class)
    return (centres[labels] + rng.normal(0, 1, size=(len(labels), 16))).astype(np.float32), labels


@pytest.mark.parametrize("name", ssl.ALGORITHMS)
def test_each_algorithm_learns_separable_features_from_few_labels(name: str) -> None:
    x, y = _blobs()
    targets = np.full_like(y, -1)
    targets[::10] = y[::10]  # 10% labeled, 4 per class
    x_test, y_test = _blobs(seed=0)
    (estimator,) = ssl.fit_estimators([name], ssl.SSLParams(), x, targets).values()
    result = ssl.evaluate(estimator, x_test, y_test)
    assert result.accuracy > 0.95 and result.f1 > 0.95
    assert result.y_pred.dtype == np.int64 and result.y_true.shape == (160,)
    probabilities = ssl.predict_proba(estimator, x_test[:5], num_classes=5)  # a class never seen gets 0
    assert (
        probabilities.shape == (5, 5)
        and np.allclose(probabilities.sum(1), 1)
        and (probabilities[:, 4] == 0).all()
    )


def test_estimators_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    x, y = _blobs()
    targets = np.where(np.arange(len(y)) % 5 == 0, y, -1)
    fitted = ssl.fit_estimators(list(ssl.ALGORITHMS), ssl.SSLParams(), x, targets)
    torch.save({"ssl": {name: ssl.to_tensor(e) for name, e in fitted.items()}}, tmp_path / "c.ckpt")
    stored = torch.load(tmp_path / "c.ckpt", weights_only=True)["ssl"]
    for name, estimator in fitted.items():
        assert np.array_equal(ssl.from_tensor(stored[name], name).predict(x), estimator.predict(x))


def test_untrusted_types_are_refused() -> None:
    estimator = FunctionTransformer(os.getcwd)  # a function call hidden in an "estimator"
    with pytest.raises(
        ValueError,
        match=r"refusing to load the evil estimator: it contains untrusted types \['posix.getcwd'\]",
    ):
        ssl.from_tensor(ssl.to_tensor(estimator), "evil")


def test_best_algorithm_is_chosen_on_validation_and_metrics_are_named_like_the_seed() -> None:
    def result(accuracy: float) -> ssl.SSLResult:
        return ssl.SSLResult(np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64), accuracy, accuracy / 2)

    val = {"label_propagation": result(0.8), "label_spreading": result(0.9), "self_training": result(0.9)}
    test = {"label_propagation": result(0.95), "label_spreading": result(0.7), "self_training": result(0.6)}
    metrics, results = ssl.summarize(val, test, {}, result(0.5))
    assert results["best_algorithm"] == "label_spreading"  # first of the tied best on validation, not on test
    assert metrics["summary/best_test_accuracy"] == 0.7 == results["best_test_accuracy"]
    assert metrics["label_propagation/test_accuracy"] == 0.95 and metrics["self_training/f1_score"] == 0.3
    assert (
        metrics["cnn_head/test_accuracy"] == 0.5
        and results["algorithms"]["label_spreading"]["val_accuracy"] == 0.9
    )
    with pytest.raises(ValueError, match="choose one or more of label_propagation"):
        ssl.check_algorithms(["label_smoothing"])


def test_backbone_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'resnet9' is not a torchvision classification model"):
        build_backbone("resnet9")
    with pytest.raises(
        ValueError, match=r"weights='IMAGENET' does not exist for resnet18: use one of \['IMAGENET1K_V1'"
    ):
        build_backbone("resnet18", "IMAGENET")

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(
        torch.hub, "load_state_dict_from_url", offline
    )  # stands in for a machine without internet
    with pytest.raises(RuntimeError) as error:
        build_backbone("resnet18", "IMAGENET1K_V1")
    message = str(error.value)
    assert (
        "\n" not in message
        and "resnet18-f37072fd.pth" in message
        and str(tmp_path / "hub" / "checkpoints") in message
    )
    assert "model.init_args.weights: null" in message
    backbone, width = build_backbone("efficientnet_b0")
    assert width == 1280 and backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 1280)


def test_predicting_needs_fitted_estimators_unless_the_cnn_head_is_asked() -> None:
    model = SemiSupervisedClassifier(num_classes=3, class_names=["a", "b", "c"], backbone="resnet18").eval()
    images = torch.zeros(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="no fitted SSL estimator"):
        model.classify(images)
    (first, _) = model.classify(images, ["x.jpg", "y.jpg"], algorithm="cnn_head")
    assert first["path"] == "x.jpg" and set(first["probabilities"]) == {"a", "b", "c"}
    assert first["class_name"] == max(first["probabilities"], key=first["probabilities"].get)
    checkpoint = {"hyper_parameters": {"weights": "IMAGENET1K_V1", "backbone": "resnet18"}}
    model.on_save_checkpoint(checkpoint)
    assert (
        checkpoint["hyper_parameters"]["weights"] is None
    )  # loading trained weights never downloads initial ones


def test_load_from_checkpoint_gives_a_ready_predictor(grocery_run: GroceryRun) -> None:
    trained = grocery_run.cli.model.eval()
    loaded = SemiSupervisedClassifier.load_from_checkpoint(
        grocery_run.best_checkpoint, weights_only=True, map_location="cpu"
    )
    loaded.eval()
    assert set(loaded.estimators) == set(ssl.ALGORITHMS) and loaded.class_names == [
        "apple",
        "banana",
        "bread",
    ]
    assert loaded.run_results["best_algorithm"] == trained.run_results["best_algorithm"]
    data = GroceriesDataModule(
        root=str(grocery_run.cli.datamodule.root), image_size=32, num_workers=0, batch_size=15
    )
    images, _, paths = next(iter(data.test_dataloader()))
    with torch.no_grad():
        for algorithm in (None, "self_training", "cnn_head"):
            expected = trained.classify(images, list(paths), algorithm)
            got = loaded.classify(images, list(paths), algorithm)
            assert [p["class_name"] for p in got] == [p["class_name"] for p in expected]
            assert np.allclose([p["confidence"] for p in got], [p["confidence"] for p in expected], atol=1e-5)
