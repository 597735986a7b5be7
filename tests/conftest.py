"""Fixtures shared by the test files: an isolated working directory, tiny data sets, one short grocery run.

Data sets are written by ``datamodules/synthetic*.py`` once per session into pytest's temporary
folder; a test that changes files copies the set first (:func:`copy_of`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow_server import mlflow_server  # noqa: F401 - a real `mlflow server` fixture for any test

from harvest.lightning_cli.run_setup import RUN_NAME_ENV

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
GROCERIES = [
    f"--config={CONFIGS / 'groceries_ssl.yaml'}",
    f"--config={CONFIGS / 'demo' / 'groceries_cpu.yaml'}",
]


#: Lightning DDP with two processes on the CPU (gloo): how the tests run multi-process jobs here.
DDP_CPU = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


def clear_run_name() -> None:
    """Forget the run name a previous CLI call in this process chose."""
    for name in (RUN_NAME_ENV, RUN_NAME_ENV + "_PID"):
        os.environ.pop(name, None)


def forget_mlflow_stores() -> None:
    """Drop MLflow's per-process caches of stores and database engines.

    MLflow caches stores and SQLAlchemy engines per URI string, so after a ``chdir`` the shipped
    relative URI ``sqlite:///mlflow.db`` would still write into the database of the folder where
    the process first used it. Users run one folder per process; tests change folders.
    """
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistrySqlStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingSqlStore
    from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
    from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingSqlStore, RegistrySqlStore):
        relative = [
            uri
            for uri in store._engine_map
            if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////")
        ]
        for uri in relative:
            store._engine_map.pop(uri).dispose()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run the test inside ``tmp_path`` (``runs/``, ``mlflow.db`` and ``data/`` land there)."""
    monkeypatch.chdir(tmp_path)
    for name in (RUN_NAME_ENV, RUN_NAME_ENV + "_PID"):
        monkeypatch.delenv(name, raising=False)
    forget_mlflow_stores()
    yield tmp_path
    forget_mlflow_stores()


def copy_of(root: Path, destination: Path) -> Path:
    """A private copy of a session data set that a test may change."""
    return Path(shutil.copytree(root, destination))


# ---------------------------------------------------------------------- groceries
@pytest.fixture(scope="session")
def tiny_groceries(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes x (12 train, 3 val, 5 test) JPEGs of 32x32 pixels in the DS2GROCERIES layout."""
    from datamodules.synthetic import write_groceries

    root = tmp_path_factory.mktemp("groceries") / "DS2GROCERIES"
    return write_groceries(
        root, num_classes=3, train_per_class=12, val_per_class=3, test_per_class=5, image_size=32
    )


def groceries_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments of the demo recipe on ``root`` with tiny images (subcommand not included)."""
    return [
        *GROCERIES,
        "--data.root",
        str(root),
        "--data.image_size",
        "32",
        "--data.batch_size",
        "8",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]


@dataclass
class GroceryRun:
    """One finished ``harvest fit`` of the grocery demo recipe on :func:`tiny_groceries`."""

    workdir: Path
    run_dir: Path
    cli: Any

    @property
    def best_checkpoint(self) -> Path:
        return Path(self.cli.trainer.checkpoint_callback.best_model_path)


@pytest.fixture(scope="session")
def grocery_run(tmp_path_factory: pytest.TempPathFactory, tiny_groceries: Path) -> Iterator[GroceryRun]:
    """Two epochs of the demo recipe (TensorBoard + MLflow on SQLite, checkpoints, summary), run once."""
    from harvest.commands.main import cli_main

    workdir = tmp_path_factory.mktemp("grocery_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        clear_run_name()
        forget_mlflow_stores()
        cli = cli_main(["fit", *groceries_args(tiny_groceries, "--trainer.max_epochs", "2")])
        clear_run_name()
        forget_mlflow_stores()
    yield GroceryRun(workdir=workdir, run_dir=workdir / cli.trainer.default_root_dir, cli=cli)


# ---------------------------------------------------------------------- fuji apples
FUJI = [f"--config={CONFIGS / 'fuji_maskrcnn.yaml'}", f"--config={CONFIGS / 'demo' / 'fuji_cpu.yaml'}"]


@pytest.fixture(scope="session")
def tiny_orchard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic orchard in the Fuji-SfM layout (VIA CSVs): 8 training and 3 validation images of 96x72."""
    from datamodules.synthetic_orchard import SyntheticOrchard

    root = tmp_path_factory.mktemp("orchard") / "Fuji-SfM"
    return SyntheticOrchard(
        train_images=8, val_images=3, width=96, height=72, empty_fraction=0.15, seed=1
    ).write(root)


def fuji_args(root: Path, *extra: str) -> list[str]:
    """CLI arguments of the Fuji demo recipe on ``root`` at 72x96 pixels (subcommand not included)."""
    return [
        *FUJI,
        "--data.root",
        str(root),
        "--data.min_size",
        "72",
        "--data.max_size",
        "96",
        "--data.batch_size",
        "2",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]
