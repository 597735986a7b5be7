"""SemiSupervisedClassifier and its SSL engine: agreement with scikit-learn, tensors in checkpoints, reload."""

from __future__ import annotations

import io
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GroceryRun
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import LabelPropagation, LabelSpreading, SelfTrainingClassifier

from datamodules.groceries import GroceriesDataModule
from lightning_modules import graph_ssl
from lightning_modules import ssl_algorithms as ssl
from lightning_modules.backbones import build_backbone
from lightning_modules.ssl_classifier import SemiSupervisedClassifier
from lightning_modules.ssl_state import FittedSSL


def _clusters(n: int, classes: int = 6, dims: int = 24, noise: float = 2.2, seed: int = 0) -> tuple:
    """Overlapping Gaussian clusters on the unit sphere: hard enough that the algorithms make mistakes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(classes, dims))
    labels = rng.integers(0, classes, n)
    x = centres[labels] + rng.normal(0, noise / np.sqrt(dims) * 4, size=(n, dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


def _sklearn(name: str, params: ssl.SSLParams) -> object:
    graph = {
        "kernel": params.kernel,
        "n_neighbors": params.n_neighbors,
        "gamma": params.gamma,
        "max_iter": params.max_iter,
    }
    if name == "label_propagation":
        return LabelPropagation(**graph)
    if name == "label_spreading":
        return LabelSpreading(alpha=params.alpha, **graph)
    return SelfTrainingClassifier(LogisticRegression(max_iter=1000), threshold=params.threshold)


@pytest.mark.parametrize("kernel", ["knn", "rbf"])
def test_predictions_agree_with_scikit_learn_on_the_same_features(kernel: str) -> None:
    x, y = _clusters(1600, seed=1)
    train, test = slice(0, 1200), slice(1200, None)
    targets = np.where(np.random.default_rng(2).random(1200) < 0.1, y[train], -1)
    params = ssl.SSLParams(kernel=kernel, gamma=5.0)
    fitted = FittedSSL()
    fitted.fit(list(ssl.ALGORITHMS), params, torch.from_numpy(x[train]), torch.from_numpy(targets), 6)
    for name in ssl.ALGORITHMS:
        reference = _sklearn(name, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reference.fit(x[train], targets)
        expected = reference.predict(x[test])
        got = fitted.predict(name, torch.from_numpy(x[test]), params).numpy()
        accuracy, reference_accuracy = (got == y[test]).mean(), (expected == y[test]).mean()
        assert 0.3 < reference_accuracy < 0.97, reference_accuracy  # a set where mistakes can differ
        assert (got == expected).mean() >= 0.99, name
        assert abs(accuracy - reference_accuracy) <= 0.005, name
        if name != "self_training":  # the transductive labels of the training points too
            assert (fitted.training_labels(name).numpy() == reference.transduction_).mean() >= 0.99


def test_knn_graph_is_exact_across_blocks() -> None:
    x = torch.from_numpy(_clusters(700, dims=8)[0])
    exact = torch.cdist(x.double(), x.double()).topk(5, largest=False).indices
    for block in (64, 100, 700):  # blocks of every shape, the transposed halves included
        found = graph_ssl.knn_graph(x, 5, block=block)
        assert (found == exact).float().mean() > 0.999 and (found[:, 0] == torch.arange(700)).all()
    queries = torch.from_numpy(_clusters(50, dims=8, seed=3)[0])
    expected = torch.cdist(queries.double(), x.double()).topk(5, largest=False).indices
    assert torch.equal(graph_ssl.knn_search(queries, x, 5, block=64), expected)


def test_fitted_state_is_tensors_that_round_trip_through_a_weights_only_checkpoint() -> None:
    x, y = _clusters(400, dims=32)
    targets = np.where(np.arange(400) % 5 == 0, y, -1)
    params = ssl.SSLParams()
    fitted = FittedSSL()
    fitted.fit(list(ssl.ALGORITHMS), params, torch.from_numpy(x), torch.from_numpy(targets), 6)
    buffer = io.BytesIO()
    torch.save(fitted.state_dict(), buffer)
    buffer.seek(0)
    loaded = FittedSSL()
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert loaded.fitted() == list(ssl.ALGORITHMS) and loaded.features.dtype == torch.float16
    queries = torch.from_numpy(_clusters(60, dims=32, seed=5)[0])
    for name in ssl.ALGORITHMS:
        assert torch.equal(loaded.predict_proba(name, queries, params), fitted.predict_proba(name, queries, params))
    # what fitting adds: the features once in half precision, n x classes per graph, the classifier
    growth = sum(t.numel() * t.element_size() for t in fitted.state_dict().values())
    assert growth == 400 * 32 * 2 + 2 * 400 * 6 * 4 + 6 * 32 * 4 + 6 * 4


def test_best_algorithm_is_chosen_on_validation_and_the_served_metric_follows_predict() -> None:
    def result(accuracy: float) -> ssl.SSLResult:
        return ssl.SSLResult(np.zeros(2, dtype=np.int64), np.zeros(2, dtype=np.int64), accuracy, accuracy / 2)

    val = {"label_propagation": result(0.8), "label_spreading": result(0.9), "self_training": result(0.9)}
    test = {"label_propagation": result(0.95), "label_spreading": result(0.7), "self_training": result(0.6)}
    metrics, results = ssl.summarize(val, test, {}, (result(0.4), result(0.5)))
    assert results["best_algorithm"] == "label_spreading"  # first of the tied best on validation, not on test
    assert metrics["summary/best_test_accuracy"] == 0.7 == results["best_test_accuracy"]
    assert metrics["label_propagation/test_accuracy"] == 0.95 and metrics["self_training/f1_score"] == 0.3
    assert metrics["cnn_head/test_accuracy"] == 0.5 and metrics["cnn_head/val_accuracy"] == 0.4
    assert metrics[ssl.SERVED_METRIC] == 0.9 and results["monitor"] == ssl.SERVED_METRIC
    metrics, results = ssl.summarize(val, test, {}, (result(0.4), result(0.5)), predict_algorithm="cnn_head")
    assert metrics[ssl.SERVED_METRIC] == 0.4 and results["predictor"] == "cnn_head"
    with pytest.raises(ValueError, match="choose one or more of label_propagation"):
        ssl.check_algorithms(["label_smoothing"])
    with pytest.raises(ValueError, match="model.init_args.kernel='linear': use one of knn, rbf"):
        SemiSupervisedClassifier(num_classes=3, backbone="resnet18", kernel="linear")


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
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)  # stands in for a machine without internet
    with pytest.raises(RuntimeError) as error:
        build_backbone("resnet18", "IMAGENET1K_V1")
    message = str(error.value)
    assert (
        "\n" not in message and "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    )
    assert "model.init_args.weights: null" in message
    backbone, width = build_backbone("efficientnet_b0")
    assert width == 1280 and backbone(torch.zeros(2, 3, 32, 32)).shape == (2, 1280)


def test_predicting_needs_fitted_estimators_unless_the_cnn_head_is_asked() -> None:
    model = SemiSupervisedClassifier(num_classes=3, class_names=["a", "b", "c"], backbone="resnet18").eval()
    images = torch.zeros(2, 3, 32, 32)
    with pytest.raises(RuntimeError, match="no fitted SSL predictor"):
        model.classify(images)
    (first, _) = model.classify(images, ["x.jpg", "y.jpg"], algorithm="cnn_head")
    assert first["path"] == "x.jpg" and set(first["probabilities"]) == {"a", "b", "c"}
    assert first["class_name"] == max(first["probabilities"], key=first["probabilities"].get)
    checkpoint = {"hyper_parameters": {"weights": "IMAGENET1K_V1", "backbone": "resnet18"}}
    model.on_save_checkpoint(checkpoint)
    assert checkpoint["hyper_parameters"]["weights"] is None  # loading trained weights never downloads initial ones


def test_load_from_checkpoint_gives_a_ready_predictor(grocery_run: GroceryRun) -> None:
    trained = grocery_run.cli.model.eval()
    loaded = SemiSupervisedClassifier.load_from_checkpoint(
        grocery_run.best_checkpoint, weights_only=True, map_location="cpu"
    )
    loaded.eval()
    assert loaded.ssl.fitted() == list(ssl.ALGORITHMS) and loaded.class_names == [
        "apple",
        "banana",
        "bread",
    ]
    assert loaded.run_results["best_algorithm"] == trained.run_results["best_algorithm"]
    data = GroceriesDataModule(root=str(grocery_run.cli.datamodule.root), image_size=32, num_workers=0, batch_size=15)
    images, _, paths = next(iter(data.test_dataloader()))
    with torch.no_grad():
        for algorithm in (None, "self_training", "cnn_head"):
            expected = trained.classify(images, list(paths), algorithm)
            got = loaded.classify(images, list(paths), algorithm)
            assert [p["class_name"] for p in got] == [p["class_name"] for p in expected]
            assert np.allclose([p["confidence"] for p in got], [p["confidence"] for p in expected], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_engine_on_a_gpu_predicts_as_on_the_cpu() -> None:
    x, y = _clusters(4000, seed=7)
    targets = torch.from_numpy(np.where(np.arange(3000) % 10 == 0, y[:3000], -1))
    params, queries = ssl.SSLParams(), torch.from_numpy(x[3000:])
    on_cpu, on_gpu = FittedSSL(), FittedSSL().cuda()
    on_cpu.fit(list(ssl.ALGORITHMS), params, torch.from_numpy(x[:3000]), targets, 6)
    on_gpu.fit(list(ssl.ALGORITHMS), params, torch.from_numpy(x[:3000]).cuda(), targets.cuda(), 6)
    assert on_gpu.features.is_cuda
    for name in ssl.ALGORITHMS:
        same = on_gpu.predict(name, queries.cuda(), params).cpu() == on_cpu.predict(name, queries, params)
        assert same.float().mean() >= 0.99, name
