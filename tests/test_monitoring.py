"""Inference monitoring: drift statistics, the reference profile written by fit, `harvest monitor` against it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import GroceryRun
from PIL import Image, ImageOps
from registry_testing import migrated_store  # noqa: F401 - fixture
from scipy.stats import entropy
from serving_testing import Registered, fuji_model, grocery_model, model_cache  # noqa: F401 - fixtures
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harvest.commands.main import cli_main
from harvest.monitoring.drift import drift_report, js_drift, kl_drift, mmd_test, psi
from harvest.monitoring.reference_profile import EMBEDDINGS, PROFILE
from harvest.monitoring.stats import MonitorStats, observe
from harvest.registry.api import open_registry
from harvest.registry.cache import cached_package

pytestmark = pytest.mark.usefixtures("model_cache")  # never the user's cache


def _dist(**counts: int) -> dict:
    return {"labels": list(counts), "counts": list(counts.values())}


def test_divergences_come_from_scipy_and_grow_with_shift() -> None:
    assert kl_drift(_dist(a=10, b=10), _dist(b=3, a=3)) == pytest.approx(0.0, abs=1e-9)
    skewed = kl_drift(_dist(a=10, b=10, c=10), _dist(a=30, b=0, c=0))
    assert skewed == pytest.approx(entropy([30.5, 0.5, 0.5], [10.5, 10.5, 10.5])) and skewed > 0.5
    assert kl_drift(_dist(a=10, b=10), _dist(a=11, b=9)) < 0.05
    assert js_drift(_dist(a=10), _dist(b=10)) == pytest.approx(1.0)
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-9) and psi([10, 20, 30], [30, 20, 10]) > 0.2
    rng = np.random.default_rng(0)
    same = mmd_test(rng.normal(size=(40, 8)), rng.normal(size=(30, 8)), permutations=200)
    moved = mmd_test(rng.normal(size=(40, 8)), rng.normal(1.0, size=(30, 8)), permutations=200)
    assert same[1] > 0.05 and moved[1] < 0.01 and moved[0] > same[0]


def test_detections_per_image_are_numbers_and_every_class_is_counted() -> None:
    detected = [{"scores": torch.tensor([0.9, 0.6, 0.3])}, {"scores": torch.zeros(0)}]
    assert observe(detected, None, 0.5) == ([2, 0], [pytest.approx(0.9), 0.0], [None, None])
    stats = MonitorStats("detector")
    stats.add([2, 0, 2], [0.9, 0.0, 0.7], [None] * 3, seconds=0.03)
    assert stats.distribution() == {"labels": [0, 1, 2], "counts": [1, 0, 2]}
    assert stats.metrics()["monitor/avg_detections"] == pytest.approx(4 / 3)
    classes = MonitorStats("classifier", ["apple", "milk", "pear"])
    classes.add(["milk", "milk"], [0.8, 0.6], [True, None], seconds=0.02)
    assert classes.distribution() == {"labels": ["apple", "milk", "pear"], "counts": [0, 2, 0]}
    assert classes.metrics()["monitor/accuracy"] == 1.0
    report = drift_report(classes.summary(), classes.summary())
    assert report["detected"] is False and report["metrics"]["monitor/drift_score"] == pytest.approx(0.0, abs=1e-9)


def test_fit_writes_the_reference_profile_of_the_validation_split(grocery_run: GroceryRun) -> None:
    run_dir = grocery_run.run_dir
    profile = json.loads((run_dir / PROFILE).read_text())
    classes = grocery_run.cli.datamodule.class_names
    val_images = len(grocery_run.cli.datamodule.samples["val"])
    assert profile["split"] == "val" and profile["samples"] == val_images
    assert profile["class_prior"] == {name: val_images // len(classes) for name in classes}
    assert profile["prediction_distribution"]["labels"] == classes
    assert sum(profile["prediction_distribution"]["counts"]) == len(profile["confidences"]) == val_images
    with np.load(run_dir / EMBEDDINGS) as data:
        assert data["sample"].shape == (val_images, profile["embeddings"]["dim"]) and data["mean"].ndim == 1


def _folder(images: list[Path], dst: Path, invert: bool = False) -> Path:
    dst.mkdir(parents=True)
    for i, path in enumerate(images):
        image = Image.open(path).convert("RGB")
        (ImageOps.invert(image) if invert else image).save(dst / f"{i:02d}.jpg", quality=95)
    return dst


def _monitor(model: Registered, images: Path, *extra: str) -> dict:
    before = set(Path("runs").glob("*_monitor_*")) if Path("runs").is_dir() else set()
    cli_main(["monitor", model.ref, "--images", str(images), "--tracking-uri", model.uri, *extra])
    (run,) = set(Path("runs").glob("*_monitor_*")) - before
    return json.loads((run / "monitoring_report.json").read_text()) | {"run": str(run)}


def test_harvest_monitor_measures_drift_against_training_without_an_earlier_run(
    in_tmp: Path,
    grocery_model: Registered,  # noqa: F811
    model_cache: Path,
) -> None:
    quiet = ["--", "--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "runs"]
    test_images = grocery_model.images  # the test split: same distribution as the validation split
    unshifted = _monitor(grocery_model, _folder(test_images, in_tmp / "unshifted"), *quiet)
    assert unshifted["model"] == "grocer:1" and unshifted["input"] == str(in_tmp / "unshifted")
    assert unshifted["created"].startswith("20") and unshifted["samples"] == len(test_images)
    assert unshifted["drift"]["detected"] is False, unshifted["drift"]
    metrics = unshifted["metrics"]
    assert {"monitor/drift_score", "monitor/embedding_drift_pvalue", "monitor/confidence_drift_pvalue"} <= set(metrics)
    assert metrics["monitor/drift_score"] <= 0.5

    one_class = [p for p in test_images if p.parent.name == test_images[0].parent.name]
    shifted = _monitor(grocery_model, _folder(one_class, in_tmp / "shifted", invert=True), *quiet)
    assert shifted["drift"]["detected"] is True and shifted["drift"]["reasons"]
    assert shifted["metrics"]["monitor/embedding_drift_pvalue"] < 0.01
    assert shifted["metrics"]["monitor/embedding_drift_mmd"] > metrics["monitor/embedding_drift_mmd"]
    assert shifted["prediction_distribution"]["labels"] == grocery_model.cli.datamodule.class_names  # all classes
    plots = {p.name for p in Path(shifted["run"], "plots").iterdir()}
    assert plots >= {"monitor_confidence_histogram.png", "monitor_prediction_distribution.png"}
    events = EventAccumulator(shifted["run"]).Reload()
    assert events.Scalars("monitor/drift_score")[-1].value == pytest.approx(shifted["metrics"]["monitor/drift_score"])

    (cached,) = model_cache.iterdir()  # two calls, one download: a third finds it cached too
    assert (cached / "package_path.txt").is_file()
    assert cached_package(open_registry(grocery_model.uri), grocery_model.ref)[2] is False


def test_harvest_monitor_fuji_counts_detections_per_image(
    in_tmp: Path,
    fuji_model: Registered,  # noqa: F811
) -> None:
    report = _monitor(fuji_model, _folder(fuji_model.images[:4], in_tmp / "orchard"), "--", "--trainer.logger", "false")
    distribution = report["prediction_distribution"]
    assert all(isinstance(label, int) for label in distribution["labels"]) and sum(distribution["counts"]) == 4
    assert distribution["labels"] == list(range(len(distribution["labels"])))
    assert "monitor/drift_score" in report["metrics"] and "monitor/avg_detections" in report["metrics"]


def test_a_bad_reference_fails_before_predicting(in_tmp: Path, grocery_model: Registered) -> None:  # noqa: F811
    Path("notes.json").write_text("{}")
    with pytest.raises(ValueError, match=r"reference=notes.json: not a reference profile or monitoring report"):
        cli_main(
            ["monitor", grocery_model.ref, "--images", str(grocery_model.images[0].parent), "--reference", "notes.json"]
            + ["--tracking-uri", grocery_model.uri, "--", "--trainer.logger", "false"]
        )
    assert not list(Path("runs").glob("*/monitoring_report.json"))


def test_harvest_monitor_names_a_missing_model(
    in_tmp: Path, grocery_model: Registered, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["monitor", "nobody@production", "--tracking-uri", grocery_model.uri])
    assert "no registered model named 'nobody'" in capsys.readouterr().err
    assert exit_info.value.code == 2


def test_harvest_monitor_on_the_test_split_reports_accuracy(in_tmp: Path, grocery_model: Registered) -> None:  # noqa: F811
    cli_main(
        ["monitor", grocery_model.ref, "--limit-batches", "1", "--tracking-uri", grocery_model.uri]
        + ["--", "--trainer.logger", "false"]
    )
    (report,) = Path("runs").glob("grocer_monitor_*/monitoring_report.json")
    data = json.loads(report.read_text())
    assert 0 < data["metrics"]["monitor/samples"] <= 8 and 0.0 <= data["metrics"]["monitor/accuracy"] <= 1.0


def test_both_data_modules_predict_a_folder_without_their_data_set(tmp_path: Path) -> None:
    from datamodules import FujiApplesDataModule, GroceriesDataModule

    folder = tmp_path / "incoming" / "day1"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((48, 64, 3), 40 * i, np.uint8)).save(folder / f"{i}.jpg")
    missing = str(tmp_path / "nothing")
    groceries = GroceriesDataModule(
        missing, predict_root=str(tmp_path / "incoming"), class_names=["a", "b"], image_size=32
    )
    groceries.setup("predict")
    images, labels, paths = next(iter(groceries.predict_dataloader()))
    assert images.shape == (3, 3, 32, 32) and labels.tolist() == [-1, -1, -1] and len(paths) == 3
    with pytest.raises(FileNotFoundError, match="DS2GROCERIES not found"):
        groceries.setup("fit")  # training still needs the data set

    fuji = FujiApplesDataModule(missing, predict_root=str(tmp_path / "incoming"), min_size=48, max_size=64)
    fuji.setup("predict")
    images, targets = next(iter(fuji.predict_dataloader()))
    assert len(images) == 2 and images[0].shape[0] == 3  # batch_size 2 of the 3 images
    with pytest.raises(FileNotFoundError, match="predict_root=.*empty: no .jpg"):
        FujiApplesDataModule(missing, predict_root=str(tmp_path / "empty")).setup("predict")
    shutil.rmtree(folder)
