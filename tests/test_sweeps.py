"""``harvest sweep``: Optuna trials are real ``harvest fit`` runs; W&B export runs the same keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from harvest.cli import HarvestCLI, cli_main
from harvest.sweep_space import SweepConfigError, load_sweep

pytest.importorskip("optuna")

TOY_CONFIG = {
    "model": {"class_path": "toy_lightning.ToyModel"},
    "data": {"class_path": "toy_lightning.ToyData"},
    "trainer": {
        "max_epochs": 2,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [{"class_path": "callbacks.TrainingSummary"}],
    },
}


@pytest.fixture
def toy_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(TOY_CONFIG))
    return path


def _sweep(tmp_path: Path, **overrides: object) -> Path:
    spec = {
        "method": "random",
        "metric": {"name": "val/loss", "goal": "minimize"},
        "parameters": {
            "model.init_args.lr": {"min": 0.01, "max": 1.0, "distribution": "log_uniform_values"},
            "data.init_args.batch_size": {"values": [8, 32]},
        },
        **overrides,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_optuna_sweep_runs_real_trials_and_writes_the_best_config(toy_config: Path, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    cli_main(
        ["sweep", "--config", str(toy_config), "--sweep", str(sweep), "--trials", "3", "--study-name", "toy_sweep"]
    )

    results = json.loads(Path("runs/sweeps/toy_sweep/results.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["COMPLETE"] * 3
    # every trial is a real run with its own directory and summary holding the value Optuna got
    for trial in results["trials"]:
        summary = json.loads(Path("runs", trial["run_name"], "training_summary.json").read_text())
        assert summary["final_metrics"]["val/loss"] == pytest.approx(trial["value"])
        assert summary["run_name"] == f"toy_sweep_trial{trial['number']:03d}"
    best = min(results["trials"], key=lambda t: t["value"])
    assert results["best"]["number"] == best["number"]

    # best.yaml composes after the base config and reproduces the best trial's parameters
    best_yaml = Path("runs/sweeps/toy_sweep/best.yaml")
    cli = HarvestCLI(args=["--config", str(toy_config), "--config", str(best_yaml)], run=False)
    assert cli.model.hparams.lr == pytest.approx(best["params"]["model.init_args.lr"])
    assert cli.datamodule.batch_size == best["params"]["data.init_args.batch_size"]


def test_hyperband_prunes_on_the_monitored_metric(toy_config: Path, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, early_terminate={"type": "hyperband", "min_iter": 1, "monitor": "val/loss"})
    cli_main(
        [
            "sweep",
            "--config",
            str(toy_config),
            "--sweep",
            str(sweep),
            "--trials",
            "6",
            "--study-name",
            "hb",
            "--",
            "--trainer.max_epochs=4",
        ]
    )
    results = json.loads(Path("runs/sweeps/hb/results.json").read_text())
    states = {t["state"] for t in results["trials"]}
    assert states <= {"COMPLETE", "PRUNED"} and "COMPLETE" in states
    for trial in results["trials"]:
        summary = json.loads(Path("runs", trial["run_name"], "training_summary.json").read_text())
        if trial["state"] == "PRUNED":
            assert summary["status"].startswith("failed: TrialPruned") and summary["epochs_trained"] < 4
        else:
            assert summary["epochs_trained"] == 4


def test_wandb_export_keeps_the_keys_and_says_what_to_run_offline(
    toy_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = _sweep(tmp_path, early_terminate={"type": "hyperband", "min_iter": 2, "monitor": "val/loss"})
    cli_main(["sweep", "--backend", "wandb", "--config", str(toy_config), "--sweep", str(sweep), "--study-name", "wb"])
    exported = yaml.safe_load(Path("runs/sweeps/wb/wandb_sweep.yaml").read_text())
    said = capfd.readouterr().err
    assert "W&B sweeps need the W&B server" in said and "wandb sweep runs/sweeps/wb/wandb_sweep.yaml" in said
    assert exported["command"] == ["${env}", "harvest", "fit", "--config", str(toy_config), "${args}"]
    assert exported["early_terminate"] == {"type": "hyperband", "min_iter": 2}
    assert set(exported["parameters"]) == {"model.init_args.lr", "data.init_args.batch_size"}
    # what a W&B agent would run parses as a harvest fit command line
    cli = HarvestCLI(
        args=["--config", str(toy_config), "--model.init_args.lr=0.05", "--data.init_args.batch_size=8"], run=False
    )
    assert cli.model.hparams.lr == pytest.approx(0.05)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"method": "hill", "metric": {"name": "m"}, "parameters": {"a": {"values": [1]}}},
            "method 'hill' is not one of",
        ),
        ({"parameters": {"a": {"values": [1]}}}, "metric.name is missing"),
        ({"metric": {"name": "m"}, "parameters": {"a": {"min": 1}}}, "parameter 'a' needs"),
        ({"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"min": 1, "max": 2}}}, "grid search needs"),
    ],
)
def test_bad_sweep_files_name_the_file_and_the_fix(tmp_path: Path, spec: dict, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(SweepConfigError, match=message) as error:
        load_sweep(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_metric_that_is_never_logged_fails_with_the_logged_names(toy_config: Path, tmp_path: Path) -> None:
    sweep = _sweep(tmp_path, metric={"name": "val/acuracy", "goal": "maximize"})
    with pytest.raises(SweepConfigError, match=r"'val/acuracy' was not logged .* val/loss"):
        cli_main(["sweep", "--config", str(toy_config), "--sweep", str(sweep), "--trials", "1"])
