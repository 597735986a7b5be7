"""A tracking server that is down at start or dies mid-run never loses the local run."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning.pytorch as pl
import mlflow
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow_server import MlflowServer, Relay, free_port
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from toy_lightning import ToyData, ToyModel

from callbacks import MLflowTracking, TrainingSummary
from harvest.commands.main import cli_main


@pytest.fixture
def fast_failing_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HTTP retries and short timeouts (MLflow's defaults retry for minutes)."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")


@pytest.fixture
def harvest_lines(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> pytest.LogCaptureFixture:
    """Harvest's callback messages, also when the CLI already pointed them at stderr only."""
    monkeypatch.setattr(logging.getLogger("callbacks"), "propagate", True)
    caplog.set_level(logging.WARNING, logger="callbacks")
    return caplog


class CutAfterEpoch(pl.Callback):
    """Cuts the relay to the tracking server when an epoch ends (before MLflowTracking's check)."""

    def __init__(self, relay: Relay, epoch: int) -> None:
        self.relay, self.epoch = relay, epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            mlflow.flush_async_logging()  # what was logged so far has reached the server
            self.relay.cut()


def _trainer(run_dir: Path, uri: str, *extra: pl.Callback) -> tuple[pl.Trainer, MLFlowLogger]:
    mlflow_logger = MLFlowLogger(experiment_name="failures", run_name=run_dir.name, tracking_uri=uri, synchronous=False)
    loggers = [TensorBoardLogger(save_dir=str(run_dir.parent), name=run_dir.name, version=""), mlflow_logger]
    callbacks = [
        *extra,
        MLflowTracking(health_timeout=2.0),
        TrainingSummary(),
        ModelCheckpoint(save_last=True),
    ]
    trainer = pl.Trainer(
        default_root_dir=str(run_dir),
        logger=loggers,
        callbacks=callbacks,
        max_epochs=4,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    return trainer, mlflow_logger


def test_server_unreachable_at_start_stops_before_training_with_one_clear_line(
    tmp_path: Path, fast_failing_mlflow: None, harvest_lines: pytest.LogCaptureFixture
) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    run_dir = tmp_path / "runs" / "toy_start"
    trainer, _ = _trainer(run_dir, uri)
    with pytest.raises(MlflowException):
        trainer.fit(ToyModel(), datamodule=ToyData())

    (line,) = [r.getMessage() for r in harvest_lines.records if "cannot be reached" in r.getMessage()]
    assert uri in line and "stopped before training" in line and "mlflow server" in line
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"].startswith("failed: MlflowException") and summary["epochs_trained"] == 0


def test_server_dying_mid_run_detaches_mlflow_and_training_completes(
    tmp_path: Path,
    mlflow_server: MlflowServer,
    fast_failing_mlflow: None,
    harvest_lines: pytest.LogCaptureFixture,
) -> None:
    relay = Relay(mlflow_server.port)
    run_dir = tmp_path / "runs" / "toy_mid_run"
    trainer, mlflow_logger = _trainer(run_dir, relay.uri, CutAfterEpoch(relay, epoch=1))
    trainer.fit(ToyModel(), datamodule=ToyData())
    mlflow.flush_async_logging()  # writes queued after the cut fail now, with no retries

    # one warning, MLflow detached, everything local complete
    (line,) = [r.getMessage() for r in harvest_lines.records if "training goes on without MLflow" in r.getMessage()]
    assert relay.uri in line and "after epoch 1" in line and str(run_dir) in line
    assert not any(isinstance(lg, MLFlowLogger) for lg in trainer.loggers)
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_trained"] == 4
    assert Path(summary["best_checkpoint"]).is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(EventAccumulator(str(run_dir)).Reload().Scalars("train/loss")) == 4

    # the server kept what it got before the cut (epochs 0 and maybe 1, 4 steps each), nothing after
    history = MlflowClient(mlflow_server.uri).get_metric_history(mlflow_logger.run_id, "train/loss")
    assert 1 <= len(history) <= 2 and all(m.step < 8 for m in history)


def test_harvest_finds_a_dead_tracking_server_in_seconds_before_anything_runs(in_tmp: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there; MLflow's own retries would take minutes
    args = [
        "fit",
        "--model",
        "toy_lightning.ToyModel",
        "--data",
        "toy_lightning.ToyData",
        "--run_name",
        "dead",
        "--trainer.logger",
        "MLFlowLogger",
        "--trainer.logger.tracking_uri",
        uri,
        "--trainer.callbacks+",
        "MLflowTracking",
        "--trainer.callbacks+",
        "TrainingSummary",
    ]
    started = time.perf_counter()
    with pytest.raises(RuntimeError) as error:
        cli_main(args)
    assert time.perf_counter() - started < 30
    message = str(error.value)
    assert "\n" not in message and f"MLflow tracking server {uri} cannot be reached" in message
    assert "nothing was run" in message and "configs/loggers/tensorboard.yaml" in message
    assert not Path("runs/dead/training_summary.json").exists()
