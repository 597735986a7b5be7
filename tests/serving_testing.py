"""Fixtures of the serving, prediction, export and monitoring tests: registered models of both pipelines.

Each is a real ``harvest fit`` of a demo recipe on tiny synthetic data, registered into its own
MLflow SQLite store (one per session; tests that register more use a name of their own).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import GroceryRun, clear_run_name, forget_mlflow_stores, fuji_args

from harvest.registry.api import open_registry
from harvest.registry.cache import CACHE_ENV


@dataclass
class Registered:
    """A registered model: its store, its reference, the CLI run that trained it and its images."""

    uri: str
    ref: str
    cli: Any
    images: list[Path]
    workdir: Path


def b64(path: Path) -> str:
    """The file's bytes, base64-encoded as a client sends them."""
    return base64.b64encode(path.read_bytes()).decode("ascii")


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model cache of this test's own (``$HARVEST_MODEL_CACHE``), not the user's."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "model-cache"))
    return tmp_path / "model-cache"


#: Built models by (name, session temp folder): every test module imports these fixtures, and pytest
#: would otherwise build a session fixture (and the migrated store it copies) once per importing module.
_BUILT: dict[tuple[str, Path], Registered] = {}


def _once(name: str, factory: pytest.TempPathFactory, build: Callable[[], Registered]) -> Registered:
    key = (name, factory.getbasetemp())
    if key not in _BUILT:
        _BUILT[key] = build()
    return _BUILT[key]


def _store(factory: pytest.TempPathFactory, name: str, migrated: Path) -> tuple[Path, str]:
    """A new folder holding a copy of the migrated MLflow store, and the store's URI."""
    workdir = factory.mktemp(name)
    shutil.copy(migrated, workdir / "registry.db")
    return workdir, f"sqlite:///{workdir / 'registry.db'}"


@pytest.fixture(scope="session")
def grocery_model(
    tmp_path_factory: pytest.TempPathFactory,
    grocery_run: GroceryRun,
    tiny_groceries: Path,
    request: pytest.FixtureRequest,
) -> Registered:
    """The session's grocery run registered as ``grocer@production`` in a store of its own."""

    def build() -> Registered:
        workdir, uri = _store(tmp_path_factory, "grocery_model", request.getfixturevalue("migrated_store"))
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(workdir)  # MLflow puts a SQLite store's artifacts under ./mlruns
            open_registry(uri).register(grocery_run.run_dir, "grocer", aliases=["production"])
        images = sorted((tiny_groceries / "test").rglob("*.jpg"))
        return Registered(uri, "grocer@production", grocery_run.cli, images, workdir)

    return _once("grocery_model", tmp_path_factory, build)


@pytest.fixture(scope="session")
def fuji_model(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_orchard: Path,
    request: pytest.FixtureRequest,
) -> Registered:
    """One epoch of the Fuji demo recipe; its ModelRegistryUpload registers ``fuji-maskrcnn@staging``."""
    from harvest.commands.main import cli_main

    def build() -> Registered:
        workdir, uri = _store(tmp_path_factory, "fuji_model", request.getfixturevalue("migrated_store"))
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(workdir)
            clear_run_name()
            forget_mlflow_stores()
            quiet = ["--trainer.max_epochs", "1", "--trainer.logger", "false"]
            args = fuji_args(tiny_orchard, *quiet, "--trainer.callbacks.tracking_uri", uri)
            cli = cli_main(["fit", *args, "--run_name", "fuji_apples_20250101_000000"])
            clear_run_name()
            forget_mlflow_stores()
        return Registered(uri, "fuji-maskrcnn@staging", cli, sorted(tiny_orchard.rglob("*.jpg")), workdir)

    return _once("fuji_model", tmp_path_factory, build)
