"""The grocery pipeline through ``harvest fit|test|predict`` on a tiny synthetic DS2GROCERIES set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, DDP_CPU, GroceryRun, groceries_args
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harvest.commands.main import cli_main
from lightning_modules import ssl_algorithms
from lightning_modules.ssl_state import FittedSSL

ALGORITHMS = ssl_algorithms.ALGORITHMS
SSL_KEYS = {f"{a}/{m}" for a in ALGORITHMS for m in ("test_accuracy", "f1_score")} | {
    "summary/best_test_accuracy",
    "dataset/train_samples",
    "dataset/test_samples",
    "data/labeled_samples",
    "data/unlabeled_samples",
    "timing/fine_tune_seconds",
    "training/fine_tune_epochs",
}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "training_summary.json").read_text())


@pytest.fixture
def fit_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records which algorithms get fitted (the real fitting still runs)."""
    calls: list[list[str]] = []
    real = FittedSSL.fit

    def recording(self: FittedSSL, names: list[str], *args: object) -> dict:
        calls.append(list(names))
        return real(self, names, *args)

    monkeypatch.setattr(FittedSSL, "fit", recording)
    return calls


def _fitted(checkpoint: dict) -> set[str]:
    """Algorithms whose fitted tensors a checkpoint holds."""
    state = checkpoint["state_dict"]
    fitted = {name for name in ALGORITHMS[:2] if state[f"ssl.{name}"].numel()}
    return fitted | ({"self_training"} if state["ssl.self_training_weight"].numel() else set())


def test_fast_dev_run_goes_through_the_whole_pipeline(in_tmp: Path, tiny_groceries: Path) -> None:
    cli = cli_main(
        [
            "fit",
            *groceries_args(tiny_groceries, "--trainer.fast_dev_run", "true", "--trainer.logger", "false"),
        ]
    )
    run_dir = Path(cli.trainer.default_root_dir)
    summary = _summary(run_dir)
    assert SSL_KEYS <= set(summary["final_metrics"]) and summary["results"]["best_algorithm"] in ALGORITHMS
    assert not (run_dir / "data_split.json").exists() and not (run_dir / "config.yaml").exists()  # a dev run


def test_fit_writes_summary_checkpoints_split_and_tracker_records(grocery_run: GroceryRun) -> None:
    run_dir, cli = grocery_run.run_dir, grocery_run.cli
    summary = _summary(run_dir)
    metrics = summary["final_metrics"]
    assert (
        summary["status"] == "completed"
        and summary["epochs_trained"] == 2
        and summary["monitor"] == "val/accuracy"
    )
    assert SSL_KEYS <= set(metrics) and metrics["training/fine_tune_epochs"] == 2
    # end-of-fit results are final metrics, not part of the last epoch's row
    assert [sorted(k for k in row if k.startswith("summary/")) for row in summary["history"]] == [[], []]
    assert all("val/accuracy" in row for row in summary["history"])
    assert metrics["dataset/train_samples"] == 36 and metrics["dataset/test_samples"] == 15
    assert metrics["data/labeled_samples"] + metrics["data/unlabeled_samples"] == 36
    best = summary["results"]["best_algorithm"]
    assert metrics["summary/best_test_accuracy"] == pytest.approx(metrics[f"{best}/test_accuracy"])
    assert set(cli.model.ssl_results) == {*ALGORITHMS, "cnn_head"} and len(cli.model.ssl_results[best].y_pred) == 15

    # the fitted predictors are tensors of the best checkpoint, which Lightning wrote again after the stage
    checkpoint = torch.load(summary["best_checkpoint"], weights_only=True)
    assert _fitted(checkpoint) == set(ALGORITHMS)
    assert checkpoint["ssl"]["run_results"]["best_algorithm"] == best
    assert checkpoint["state_dict"]["ssl.features"].shape == (36, 512)  # every training image, ResNet-18
    assert checkpoint["state_dict"]["ssl.features"].dtype == torch.float16
    assert metrics["summary/val_accuracy"] == metrics[f"{best}/val_accuracy"]
    split = json.loads((run_dir / "data_split.json").read_text())
    assert (
        checkpoint["GroceriesDataModule"]["split"] == split and len(split["labeled"]) == 12
    )  # 30% of 12, per class

    # what was logged after training reached the trackers too
    client = MlflowClient(f"sqlite:///{grocery_run.workdir / 'mlflow.db'}")
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("groceries_ssl").experiment_id])
    assert mlflow_run.info.run_name == run_dir.name
    assert mlflow_run.data.metrics["summary/best_test_accuracy"] == pytest.approx(
        metrics["summary/best_test_accuracy"]
    )
    events = EventAccumulator(str(run_dir)).Reload()
    assert {f"{a}/test_accuracy" for a in ALGORITHMS} <= set(events.Tags()["scalars"])


def test_test_reuses_the_checkpoint_predictors(
    in_tmp: Path, grocery_run: GroceryRun, tiny_groceries: Path, fit_calls: list
) -> None:
    ckpt = grocery_run.best_checkpoint
    cli = cli_main(
        ["test", *groceries_args(tiny_groceries, "--trainer.logger", "false"), "--ckpt_path", str(ckpt)]
    )
    assert fit_calls == []
    fitted = _summary(grocery_run.run_dir)["final_metrics"]
    tested = _summary(Path(cli.trainer.default_root_dir))["final_metrics"]
    for algorithm in ALGORITHMS:
        assert tested[f"{algorithm}/test_accuracy"] == pytest.approx(fitted[f"{algorithm}/test_accuracy"])

    # a checkpoint without fitted predictors (e.g. one written mid-training) gets them fitted on its features
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["ssl"]
    for key in [k for k in checkpoint["state_dict"] if k.startswith("ssl.")]:
        del checkpoint["state_dict"][key]  # as written before the SSL state existed
    torch.save(checkpoint, in_tmp / "bare.ckpt")
    cli = cli_main(
        ["test", *groceries_args(tiny_groceries, "--trainer.logger", "false"), "--ckpt_path", "bare.ckpt"]
    )
    assert fit_calls == [list(ALGORITHMS)]
    assert {f"{a}/test_accuracy" for a in ALGORITHMS} <= set(cli.trainer.callback_metrics)


def test_without_loggers_the_summary_is_still_written_and_predict_returns_classes(
    in_tmp: Path, tiny_groceries: Path
) -> None:
    args = groceries_args(tiny_groceries, "--trainer.logger", "false", "--trainer.max_epochs", "1")
    cli = cli_main(["fit", *args, "--model.algorithms", "[label_spreading]"])
    summary = _summary(Path(cli.trainer.default_root_dir))
    assert (
        summary["results"]["best_algorithm"] == "label_spreading"
        and "label_spreading/f1_score" in summary["final_metrics"]
    )
    assert Path(summary["best_checkpoint"]).is_file()

    cli = cli_main(["predict", *args, "--ckpt_path", summary["best_checkpoint"]])
    predictions = [p for batch in cli.trainer.predict_loop.predictions for p in batch]
    assert len(predictions) == 15 and predictions[0]["algorithm"] == "label_spreading"
    written = (Path(cli.trainer.default_root_dir) / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == predictions
    first = predictions[0]
    assert first["class_name"] in ("apple", "banana", "bread") and Path(first["path"]).is_file()
    assert first["confidence"] == max(first["probabilities"].values()) and sum(
        first["probabilities"].values()
    ) == pytest.approx(1)


def test_n_neighbors_above_the_training_set_stops_before_fine_tuning(in_tmp: Path, tiny_groceries: Path) -> None:
    args = groceries_args(tiny_groceries, "--trainer.logger", "false", "--model.n_neighbors", "36")
    with pytest.raises(
        ValueError, match=r"model.init_args.n_neighbors=36 needs more than that many training images \(found 36\)"
    ):
        cli_main(["fit", *args])
    (run_dir,) = Path("runs").iterdir()
    assert _summary(run_dir)["epochs_trained"] == 0 and not list(run_dir.glob("checkpoints/*.ckpt"))


def test_real_recipe_without_data_says_where_to_put_it(in_tmp: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"DS2GROCERIES not found: data/DS2GROCERIES/train is missing\. Put the data set",
    ):
        cli_main(["fit", "--config", str(CONFIGS / "groceries_ssl.yaml"), "--model.weights", "null"])
    assert not Path("data").exists()


@pytest.mark.slow
def test_ddp_on_cpu_fits_and_tests_with_the_ssl_stage_on_rank_zero(
    in_tmp: Path, tiny_groceries: Path
) -> None:
    ddp = [*DDP_CPU, "--trainer.logger", "false"]
    args = [*groceries_args(tiny_groceries, "--data.batch_size", "4", *ddp)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    run = [sys.executable, "-m", "harvest"]
    subprocess.run(
        [*run, "fit", *args, "--trainer.max_epochs", "2"],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (run_dir,) = Path("runs").iterdir()
    summary = _summary(run_dir)
    assert SSL_KEYS <= set(summary["final_metrics"]) and summary["status"] == "completed"
    assert _fitted(torch.load(summary["best_checkpoint"], weights_only=True)) == set(ALGORITHMS)

    test = [*run, "test", *args, "--run_name", "ddp_test", "--ckpt_path", summary["best_checkpoint"]]
    subprocess.run(test, env=env, check=True, capture_output=True, timeout=300)
    tested = _summary(Path("runs/ddp_test"))["final_metrics"]
    assert tested["summary/best_test_accuracy"] == pytest.approx(
        summary["final_metrics"]["summary/best_test_accuracy"]
    )
