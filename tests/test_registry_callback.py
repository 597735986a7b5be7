"""ModelRegistryUpload at the end of ``fit``: register, threshold, staging, and a registry that is down."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import clear_run_name
from mlflow import MlflowClient
from mlflow_server import free_port
from registry_testing import migrated_store, sqlite_uri, train_toy  # noqa: F401 - fixtures

from callbacks import ModelRegistryUpload
from harvest.registry.api import open_registry


def _upload(**init_args: object) -> list[str]:
    args = ["--trainer.callbacks+", "ModelRegistryUpload"]
    for key, value in init_args.items():
        args += [f"--trainer.callbacks.{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


@pytest.fixture
def messages(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The callback's log lines (its logger does not propagate once the CLI configured logging)."""
    logger = logging.getLogger("callbacks.model_registry_upload")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger=logger.name)
    yield caplog
    logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def _fresh_run_names() -> None:
    clear_run_name()


def test_registers_the_best_checkpoint_and_stages_only_a_better_one(
    sqlite_uri: str,
    tmp_path: Path,
    messages: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    mlflow = ["--trainer.logger", "MLFlowLogger", "--trainer.logger.tracking_uri", sqlite_uri]
    upload = _upload(name="toy", promote_to_staging=True)
    # a name without timestamp: the training run is found through the MLflow experiment in its config.yaml
    good = train_toy(tmp_path, "toy-good", *mlflow, *upload, "--trainer.max_epochs", "3")
    worse = train_toy(
        tmp_path, "toy_20250101_000011", *mlflow, *upload, "--trainer.max_epochs", "1", "--model.lr", "0.001"
    )

    registry = open_registry(sqlite_uri)
    v1, v2 = registry.listing()
    assert v1.record["run_name"] == good.name and v2.record["run_name"] == worse.name
    assert v1.aliases == ["staging"] and v2.aliases == ["latest"]  # the worse model did not take staging
    assert v1.metrics["val/loss"] < v2.metrics["val/loss"]
    assert "staging stays on toy:1" in messages.text
    client = MlflowClient(sqlite_uri)
    run_id = client.get_model_version("toy", "1").run_id
    assert client.get_run(run_id).info.run_name == good.name  # the logger's own run, not a new one

    strict = _upload(name="toy", threshold=1e-9)  # val/loss can never be that low here
    train_toy(tmp_path, "toy_20250101_000012", *mlflow, *strict, "--trainer.max_epochs", "1")
    assert len(registry.listing()) == 2 and "does not pass the threshold 1e-09 (mode min)" in messages.text


def test_an_unreachable_registry_never_fails_the_run(
    tmp_path: Path, messages: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    run_dir = train_toy(
        tmp_path,
        "toy_20250101_000013",
        *_upload(name="toy", tracking_uri=f"http://127.0.0.1:{free_port()}"),
        "--trainer.max_epochs",
        "1",
    )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "training_summary.json").is_file()
    assert f"register it later with `harvest registry register {run_dir} --name toy`" in messages.text


def test_offline_wandb_registry_is_reported_not_half_written(
    tmp_path: Path, messages: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    train_toy(
        tmp_path,
        "toy_20250101_000014",
        *_upload(name="toy", tracking_uri="wandb://team/harvest"),
        "--trainer.max_epochs",
        "1",
    )
    assert "needs a connection to the W&B Registry (WANDB_MODE=offline); nothing was written" in messages.text
    assert not (tmp_path / "wandb").exists()


def test_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode='best'"):
        ModelRegistryUpload(name="toy", mode="best")
