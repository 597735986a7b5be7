"""Fixtures shared by the registry tests: trained toy runs and an MLflow SQLite store per test.

A fresh MLflow SQLite store costs seconds of schema migrations, so one migrated store is made
per session and copied for each test (an absolute URI per test: MLflow caches stores by URI).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from toy_lightning import CHECKPOINT_ARGS, QUIET_ARGS, TOY_ARGS

from harvest.commands.main import cli_main

TOY = [*TOY_ARGS, "--seed_everything", "0"]
QUIET = [*QUIET_ARGS, "--trainer.logger", "false"]
CHECKPOINT = [*CHECKPOINT_ARGS, "--trainer.callbacks+", "TrainingSummary"]


def train_toy(root: Path, run_name: str, *extra: str) -> Path:
    """Fit the toy model into ``root/runs/<run_name>`` and return the run directory."""
    run_dir = root / "runs" / run_name  # trainer.default_root_dir: the folder that holds run directories
    cli_main(
        [
            "fit",
            *TOY,
            *QUIET,
            *CHECKPOINT,
            "--run_name",
            run_name,
            "--trainer.default_root_dir",
            str(run_dir.parent),
            *extra,
        ]
    )
    return run_dir


@pytest.fixture(scope="session")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two finished toy runs: a short one and a longer (better) one."""
    root = tmp_path_factory.mktemp("toy_runs")
    short = train_toy(root, "toy_20250101_000001", "--trainer.max_epochs", "1", "--model.lr", "0.01")
    longer = train_toy(root, "toy_20250101_000002", "--trainer.max_epochs", "3")  # explicit run names
    return short, longer


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with its schema already created."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_store: Path) -> str:
    """A fresh MLflow SQLite store in ``tmp_path`` (the working directory, so ``mlruns/`` lands there too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copy(migrated_store, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def use_mlflow_uri(monkeypatch: pytest.MonkeyPatch, uri: str) -> None:
    """Make ``uri`` MLflow's default tracking and registry URI for one test (``models:/`` resolves there)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    monkeypatch.setattr(tracking_utils, "_tracking_uri", uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", uri)
