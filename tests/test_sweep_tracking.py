"""Sweeps and the trackers: grouped trials, no registry in trials, ``--register``, preflight, W&B sweeps that work."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from conftest import clear_run_name
from registry_testing import migrated_store, sqlite_uri  # noqa: F401
from test_sweeps import TOY_CONFIG
from wandb_records import OfflineRun, records

from harvest.commands.main import cli_main
from harvest.registry.api import open_registry

pytest.importorskip("optuna")

CHECKPOINT = {"class_path": "ModelCheckpoint", "init_args": {"monitor": "val/loss", "save_last": True}}
WANDB_TRACKING = {"class_path": "WandbTracking"}  # finishes the W&B run at the end of fit, as the recipes do
SWEEP = {
    "method": "grid",
    "metric": {"name": "val/loss", "goal": "minimize"},
    "parameters": {"model.init_args.lr": {"values": [1.0e-5, 0.5, 1.0]}},
}


def _config(folder: Path, loggers: list, *callbacks: dict) -> Path:
    trainer = {**TOY_CONFIG["trainer"], "max_epochs": 2, "logger": loggers}
    trainer["callbacks"] = [*TOY_CONFIG["trainer"]["callbacks"], CHECKPOINT, *callbacks]
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump({**TOY_CONFIG, "trainer": trainer}))
    return path


def _sweep(folder: Path, **extra: object) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({**SWEEP, **extra}))
    return path


def _upload(uri: str) -> dict:
    return {
        "class_path": "ModelRegistryUpload",
        "init_args": {"name": "toy", "tracking_uri": uri, "promote_to_staging": True},
    }


def test_trials_register_nothing_and_register_best_registers_the_best_once(sqlite_uri: str, tmp_path: Path) -> None:  # noqa: F811
    mlflow = [{"class_path": "MLFlowLogger", "init_args": {"tracking_uri": sqlite_uri}}]
    config = _config(tmp_path, mlflow, _upload(sqlite_uri))
    clear_run_name()
    cli_main(
        [
            "sweep",
            "--config",
            str(config),
            "--sweep",
            str(_sweep(tmp_path, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})),
            "--seed",
            "0",
            "--study-name",
            "grouped",
            "--register",
            "toy-best",
        ]
    )
    results = json.loads(Path("runs/sweeps/grouped/results.json").read_text())
    best = results["best"]

    # the trials' ModelRegistryUpload never ran: one version in all, the best trial's, registered by the sweep
    (version,) = open_registry(sqlite_uri).listing()
    assert (version.name, version.record["run_name"]) == ("toy-best", best["run_name"])
    assert version.metrics["val/loss"] == pytest.approx(best["value"])

    # every trial is an MLflow child run of one parent run named after the study
    from mlflow import MlflowClient

    client = MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("toy")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("harvest.sweep_parent") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "grouped"
    assert sorted(r.info.run_name for r in children) == sorted(t["run_name"] for t in results["trials"])
    # a trial Hyperband stopped says so in MLflow
    states = {r.info.run_name: r.data.tags.get("harvest.trial_state", "") for r in children}
    pruned = {t["run_name"] for t in results["trials"] if t["state"] == "PRUNED"}
    marked = {name for name, state in states.items() if state.startswith("pruned: pruned after epoch")}
    assert pruned and marked == pruned


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_mlflow_server_fails_the_first_trial_before_it_trains(in_tmp: Path) -> None:
    uri = f"http://127.0.0.1:{_free_port()}"
    mlflow = [{"class_path": "MLFlowLogger", "init_args": {"tracking_uri": uri}}]
    config = _config(in_tmp, mlflow, {"class_path": "MLflowTracking"})
    with pytest.raises(RuntimeError, match=f"MLflow tracking server {uri} cannot be reached"):
        cli_main(["sweep", "--config", str(config), "--sweep", str(_sweep(in_tmp)), "--study-name", "dead"])
    assert not list(Path("runs").rglob("training_summary.json")) and not list(Path("runs").rglob("*.ckpt"))


@pytest.fixture
def offline_wandb(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """W&B without an API key (offline), its folders inside the test's folder."""
    monkeypatch.setenv("HOME", str(in_tmp))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(in_tmp / name.lower()))
    return in_tmp


def test_the_exported_wandb_sweep_runs_harvest_fit_with_wandb_every_epoch_and_no_registry(
    offline_wandb: Path,
    sqlite_uri: str,  # noqa: F811
) -> None:
    tensorboard = [{"class_path": "TensorBoardLogger", "init_args": {"save_dir": "runs"}}]
    config = _config(offline_wandb, tensorboard, _upload(sqlite_uri), WANDB_TRACKING)
    sweep = _sweep(offline_wandb)
    argv = ["sweep", "--backend", "wandb", "--config", str(config), "--sweep", str(sweep), "--study-name", "wb"]
    cli_main([*argv, "--", "--trainer.max_epochs=3"])
    exported = yaml.safe_load(Path("runs/sweeps/wb/wandb_sweep.yaml").read_text())

    command = exported["command"]
    assert command[:5] == ["${env}", "harvest", "fit", "--config", str(config)] and command[-1] == "${args}"
    assert command[5:7] == ["--config", str(Path(__file__).resolve().parents[1] / "configs/loggers/wandb.yaml")]
    assert "--trainer.max_epochs=3" in command and "ModelRegistryUpload" not in json.dumps(command)
    assert exported["parameters"] == SWEEP["parameters"] and exported["metric"] == SWEEP["metric"]

    # what a W&B agent runs: the command with ${args} as W&B formats them (--key=value)
    clear_run_name()
    cli_main([*command[2:-1], "--model.init_args.lr=0.5"])
    (folder,) = Path("runs").rglob("offline-run-*")
    run = OfflineRun(folder)
    assert len(run.metric("val/loss")) == 3  # the swept metric, every epoch: what W&B's Hyperband watches
    assert run.config["model"]["init_args"]["lr"] == 0.5
    assert open_registry(sqlite_uri).listing() == []


def test_wandb_trials_share_one_group(offline_wandb: Path) -> None:
    config = _config(offline_wandb, [{"class_path": "WandbLogger"}], WANDB_TRACKING)
    sweep = _sweep(offline_wandb, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    cli_main(["sweep", "--config", str(config), "--sweep", str(sweep), "--seed", "0", "--study-name", "wbgroup"])
    results = json.loads(Path("runs/sweeps/wbgroup/results.json").read_text())
    for trial in results["trials"]:
        (folder,) = Path(trial["run_dir"]).rglob("offline-run-*")
        run = OfflineRun(folder)
        assert run.run.run_group == "wbgroup" and len(run.metric("val/loss")) == len(trial["reported"])
        summary = [
            i.key for r in records(run.file) if r.WhichOneof("record_type") == "summary" for i in r.summary.update
        ]
        assert ("harvest.trial_state" in summary) == (trial["state"] == "PRUNED")
    assert {t["state"] for t in results["trials"]} == {"COMPLETE", "PRUNED"}
