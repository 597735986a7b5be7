"""Inference monitoring: running statistics, drift scores, the InferenceMonitor callback, `harvest monitor`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harvest.cli import cli_main
from harvest.monitoring_stats import MonitorStats, js_divergence, observe, psi


def test_psi_and_js_are_zero_for_equal_distributions_and_grow_with_shift() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0, abs=1e-9)
    assert psi([10, 20, 30], [30, 20, 10]) > 0.2 > psi([10, 20, 30], [11, 20, 29])
    assert js_divergence({"a": 5, "b": 5}, {"b": 1, "a": 1}) == pytest.approx(0.0, abs=1e-9)
    assert js_divergence({"a": 10}, {"b": 10}) == pytest.approx(1.0)


def test_stats_report_metrics_latency_and_drift_against_a_reference() -> None:
    stats = MonitorStats()
    stats.add(["apple", "apple"], [0.9, 0.7], [True, False], seconds=0.02)
    stats.add(["pear"], [0.55], [None], seconds=0.01)
    metrics = stats.metrics()
    assert metrics["monitor/accuracy"] == pytest.approx(0.5)  # the unlabeled sample is not counted
    assert metrics["monitor/avg_confidence"] == pytest.approx((0.9 + 0.7 + 0.55) / 3)
    assert metrics["monitor/avg_inference_time_ms"] == pytest.approx(10.0)
    assert metrics["monitor/throughput_samples_per_sec"] == pytest.approx(100.0)

    same = stats.report(stats.report(None, 0.2, 0.1), psi_threshold=0.2, js_threshold=0.1)
    assert same["drift"]["detected"] is False and same["metrics"]["monitor/drift_score"] == pytest.approx(0.0, abs=1e-9)
    shifted = MonitorStats()
    shifted.add(["pear"] * 3, [0.2, 0.25, 0.3], [None] * 3, seconds=0.01)
    drift = shifted.report(stats.report(None, 0.2, 0.1), psi_threshold=0.2, js_threshold=0.1)["drift"]
    assert drift["detected"] is True and drift["confidence_psi"] > 0.2 and drift["prediction_js"] > 0.1


def test_observe_reads_classifier_and_detector_outputs() -> None:
    classified = [
        {"class_name": "milk", "class_index": 1, "confidence": 0.8},
        {"class_name": "egg", "class_index": 0, "confidence": 0.6},
    ]
    assert observe(classified, torch.tensor([1, -1]), 0.5) == (["milk", "egg"], [0.8, 0.6], [True, None])
    detected = [{"scores": torch.tensor([0.9, 0.6, 0.3])}, {"scores": torch.zeros(0)}]
    assert observe(detected, None, 0.5) == (["2 detections", "0 detections"], [pytest.approx(0.9), 0.0], [None, None])


def _predict_args(run, run_name: str, *extra: str) -> list[str]:
    return [
        "predict",
        "--config",
        str(run.run_dir / "config.yaml"),
        "--ckpt_path",
        str(run.best_checkpoint),
        "--weights_only",
        "true",
        "--return_predictions",
        "false",
        "--run_name",
        run_name,
        "--trainer.default_root_dir",
        "runs",
        "--trainer.logger",
        "TensorBoardLogger",
        "--trainer.logger.save_dir",
        "runs",
        "--trainer.callbacks+",
        "InferenceMonitor",
        "--trainer.callbacks.log_every_n_batches",
        "1",
        *extra,
    ]


def test_monitored_prediction_writes_a_report_metrics_plots_and_drift(
    in_tmp: Path, grocery_run, tiny_groceries: Path
) -> None:
    cli_main(_predict_args(grocery_run, "reference"))
    reference = json.loads(Path("runs/reference/monitoring_report.json").read_text())
    test_images = sum(1 for _ in (tiny_groceries / "test").rglob("*.jpg"))
    metrics = reference["metrics"]
    assert metrics["monitor/samples"] == test_images
    assert (
        sum(reference["prediction_distribution"].values())
        == sum(reference["confidence_histogram"]["counts"])
        == test_images
    )
    assert 0.0 <= metrics["monitor/accuracy"] <= 1.0 and metrics["monitor/avg_inference_time_ms"] > 0
    assert {p.name for p in Path("runs/reference/plots").iterdir()} >= {
        "monitor_confidence_histogram.png",
        "monitor_prediction_distribution.png",
    }
    events = EventAccumulator("runs/reference").Reload()
    assert events.Scalars("monitor/avg_confidence")[-1].value == pytest.approx(metrics["monitor/avg_confidence"])
    assert "monitor/confidence_histogram" in events.Tags()["images"]

    # the same images against themselves: no drift; uniform grey images: a measured shift
    cli_main(
        _predict_args(grocery_run, "same", "--trainer.callbacks.reference", "runs/reference/monitoring_report.json")
    )
    same = json.loads(Path("runs/same/monitoring_report.json").read_text())
    assert same["drift"]["confidence_psi"] == pytest.approx(0.0, abs=1e-6) and same["drift"]["detected"] is False
    incoming = Path("incoming")
    incoming.mkdir()
    for i in range(6):
        Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(incoming / f"grey_{i}.jpg")
    cli_main(
        _predict_args(
            grocery_run,
            "grey",
            "--data.init_args.predict_root",
            "incoming",
            "--trainer.callbacks.reference",
            "runs/reference/monitoring_report.json",
        )
    )
    grey = json.loads(Path("runs/grey/monitoring_report.json").read_text())
    assert "monitor/accuracy" not in grey["metrics"]  # unlabeled images
    assert len(grey["prediction_distribution"]) == 1  # identical images, identical predictions
    assert grey["drift"]["prediction_js"] == pytest.approx(
        js_divergence(reference["prediction_distribution"], grey["prediction_distribution"])
    )
    assert grey["drift"]["detected"] == (grey["drift"]["confidence_psi"] > 0.2 or grey["drift"]["prediction_js"] > 0.1)


def test_a_bad_reference_fails_before_predicting(in_tmp: Path, grocery_run) -> None:
    Path("notes.json").write_text("{}")
    with pytest.raises(
        ValueError,
        match=r"reference=notes.json: not a monitoring report \(no key 'confidence_histogram'\).*harvest predict",
    ):
        cli_main(_predict_args(grocery_run, "bad", "--trainer.callbacks.reference", "notes.json"))
    assert not Path("runs/bad/monitoring_report.json").exists()


def test_harvest_monitor_runs_a_registered_model(in_tmp: Path, grocery_run) -> None:
    from harvest.registry import register_model

    register_model(grocery_run.run_dir, "grocer", aliases=["production"])
    cli_main(["monitor", "grocer", "--limit-batches", "1", "--", "--trainer.logger", "false"])
    (report,) = Path("runs").glob("grocer_monitor_*/monitoring_report.json")
    data = json.loads(report.read_text())
    assert 0 < data["metrics"]["monitor/samples"] <= 8  # one batch of the demo recipe's test loader


def test_harvest_monitor_names_a_missing_model(in_tmp: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["monitor", "nobody@production"])
    assert exit_info.value.code == 2


def test_harvest_monitor_on_new_images_needs_no_data_set(in_tmp: Path, grocery_run) -> None:
    from harvest.registry import register_model

    register_model(grocery_run.run_dir, "grocer", aliases=["production"])
    incoming = Path("incoming")
    incoming.mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(incoming / f"shot_{i}.jpg")
    gone = ["--data.init_args.root", "no/data/set/here", "--trainer.logger", "false"]  # as on a serving machine
    cli_main(["monitor", "grocer", "--images", "incoming", "--", *gone])
    (report,) = Path("runs").glob("grocer_monitor_*/monitoring_report.json")
    data = json.loads(report.read_text())
    assert data["metrics"]["monitor/samples"] == 3
    assert set(data["prediction_distribution"]) <= set(grocery_run.cli.datamodule.class_names)


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
