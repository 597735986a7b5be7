"""The registry lifecycle with the real pipelines, on the SQLite store and on a real ``mlflow server``.

The grocery run is the shared session fixture (the demo recipe, whose ``ModelRegistryUpload``
registers it into the run's own MLflow store at the end of ``fit``); the Fuji run is one epoch of
the CPU demo recipe on a tiny synthetic orchard. Predictions of a loaded version must equal the
in-memory model's, through Harvest's loader and through ``mlflow.pyfunc``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import GroceryRun
from mlflow import MlflowClient
from mlflow_server import MlflowServer  # the `mlflow_server` session fixture comes from conftest.py
from registry_testing import migrated_store, sqlite_uri, use_mlflow_uri  # noqa: F401 - fixtures
from serving_testing import Registered, fuji_model  # noqa: F401 - fixture

from harvest.commands.registry import compare_rows
from harvest.registry.api import load_model, open_registry
from lightning_modules import SemiSupervisedClassifier


def _test_images(run: GroceryRun) -> torch.Tensor:
    images, _, _ = next(iter(run.cli.datamodule.test_dataloader()))
    return images


@pytest.fixture(params=["sqlite", "server"])
def registry_uri(request: pytest.FixtureRequest, sqlite_uri: str) -> str:  # noqa: F811
    """The registry under test: a fresh SQLite store, or the session's ``mlflow server`` on 127.0.0.1."""
    if request.param == "sqlite":
        return sqlite_uri
    server: MlflowServer = request.getfixturevalue("mlflow_server")
    return server.uri


def test_the_demo_recipe_registers_its_model_at_the_end_of_fit(grocery_run: GroceryRun) -> None:
    client = MlflowClient(f"sqlite:///{grocery_run.workdir / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'grocery-ssl-classifier'")
    assert client.get_run(version.run_id).info.run_name == grocery_run.run_dir.name  # linked to the training run
    assert str(client.get_model_version_by_alias("grocery-ssl-classifier", "staging").version) == str(version.version)
    tags = version.tags
    assert tags["harvest.class_path"] == "lightning_modules.SemiSupervisedClassifier"
    # the headline metric is the validation accuracy of the predictor that predict serves
    summary = json.loads((grocery_run.run_dir / "training_summary.json").read_text())
    served = summary["results"]["predictor"]
    registered = open_registry(f"sqlite:///{grocery_run.workdir / 'mlflow.db'}").resolve(
        "grocery-ssl-classifier@staging"
    )
    assert registered.record["monitor"] == "summary/val_accuracy" == summary["results"]["monitor"]
    assert registered.metrics["summary/val_accuracy"] == pytest.approx(
        summary["final_metrics"][f"{served}/val_accuracy"]
    )
    assert (
        '"summary/best_test_accuracy"' in tags["harvest.metrics"] and len(tags["harvest.dataset_hash"]) == 64
    )


def test_grocery_lifecycle_register_compare_promote_load_predict(
    registry_uri: str, grocery_run: GroceryRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"grocery-ssl-{uuid.uuid4().hex[:8]}"  # the server is shared by the session
    registry = open_registry(registry_uri)
    first = registry.register(grocery_run.run_dir, name, aliases=["staging"])
    # `harvest registry register` records what the callback records: the served predictor's
    # validation accuracy as the headline, and the registered (best) checkpoint's own val/accuracy
    summary = json.loads((grocery_run.run_dir / "training_summary.json").read_text())
    assert first.record["monitor"] == "summary/val_accuracy"
    assert first.metrics["summary/val_accuracy"] == pytest.approx(
        summary["final_metrics"][f"{summary['results']['predictor']}/val_accuracy"]
    )
    assert first.metrics["val/accuracy"] == pytest.approx(summary["best_score"])
    second = registry.register(grocery_run.best_checkpoint, name, metrics={"holdout/accuracy": 0.5})
    assert (first.version, second.version) == ("1", "2") and second.aliases == ["latest"]

    versions = registry.compare([f"{name}@staging", f"{name}:2"])
    rows = {metric: (values, best) for metric, values, best in compare_rows(versions)}
    assert rows["summary/best_test_accuracy"] == (
        [first.metrics["summary/best_test_accuracy"]] * 2,
        None,
    )  # a tie
    assert rows["holdout/accuracy"] == ([None, 0.5], None)

    assert registry.promote(name, 1, "production")[0] is None
    previous, current = registry.promote(name, 2, "production")
    assert previous.version == "1" and current.version == "2" and "production" in current.aliases

    loaded = load_model(name, alias="production", tracking_uri=registry_uri)
    assert isinstance(loaded, SemiSupervisedClassifier) and loaded.ssl.fitted() == (
        grocery_run.cli.model.ssl.fitted()
    )
    images = _test_images(grocery_run)
    in_memory = grocery_run.cli.model.eval()
    assert loaded.classify(images) == in_memory.classify(images)

    use_mlflow_uri(
        monkeypatch, registry_uri
    )  # the same version through MLflow's own loader, as `mlflow models serve` does
    files = [Path(p) for p in next(iter(grocery_run.cli.datamodule.test_dataloader()))[2]]
    served = mlflow.pyfunc.load_model(f"models:/{name}@production").predict(pd.DataFrame({"image": files}))
    expected = in_memory.classify(images)
    assert [r["class_name"] for r in served] == [r["class_name"] for r in expected]
    assert np.allclose([r["confidence"] for r in served], [r["confidence"] for r in expected])


def test_register_all_registers_each_run_once(sqlite_uri: str, grocery_run: GroceryRun, tmp_path: Path) -> None:  # noqa: F811
    from harvest.commands.registry import main

    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / grocery_run.run_dir.name).symlink_to(grocery_run.run_dir)
    main(["register-all", str(folder), "--tracking-uri", sqlite_uri])
    main(["register-all", str(folder), "--tracking-uri", sqlite_uri])
    (version,) = open_registry(sqlite_uri).listing()
    assert version.name == "groceries-ssl" and version.record["run_name"] == grocery_run.run_dir.name


def test_the_fuji_demo_registers_a_detector_that_predicts_like_the_trained_one(
    fuji_model: Registered,  # noqa: F811 - one epoch of the demo recipe; its ModelRegistryUpload registered it
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    info = open_registry(fuji_model.uri).resolve("fuji-maskrcnn@staging")  # the first version takes staging
    assert info.version == "1" and info.record["class_path"] == "lightning_modules.MaskRCNNModule"
    assert info.record["monitor"] == "val_segm/mAP" and "val_bbox/mAP" in info.metrics

    loaded = load_model("fuji-maskrcnn", alias="staging", tracking_uri=fuji_model.uri)
    images = torch.rand(2, 3, 72, 96, generator=torch.Generator().manual_seed(0))
    in_memory = fuji_model.cli.model.eval()  # one epoch: the best checkpoint holds the final weights
    with torch.inference_mode():
        expected, got = in_memory.predict_step(list(images)), loaded.predict_step(list(images))
    for e, g in zip(expected, got, strict=True):
        assert set(g) == {"boxes", "labels", "scores", "masks"}
        for key in g:
            assert torch.equal(e[key], g[key]), key

    use_mlflow_uri(monkeypatch, fuji_model.uri)
    pixels = [(image * 255).round().byte().permute(1, 2, 0).numpy() for image in images]  # uint8 H x W x 3
    served = mlflow.pyfunc.load_model("models:/fuji-maskrcnn@staging").predict(pd.DataFrame({"image": pixels}))
    with torch.inference_mode():
        expected = in_memory.predict_step([torch.from_numpy(p).permute(2, 0, 1) / 255.0 for p in pixels])
    assert len(served) == 2 and np.allclose(served[0]["boxes"], expected[0]["boxes"].numpy().reshape(-1, 4), atol=0.01)
