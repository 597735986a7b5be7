"""The model registry on a real MLflow SQLite store, with the toy model: records, safety, atomicity, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from registry_testing import migrated_store, sqlite_uri, toy_runs, use_mlflow_uri  # noqa: F401 - fixtures
from toy_lightning import ToyModel

from harvest.commands.registry import compare_rows
from harvest.commands.registry import main as registry_cli
from harvest.registry.api import LATEST, ModelRef, RegistryError, load_model, open_registry, register_model
from harvest.registry.package import WEIGHTS, IntegrityError


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    registry_cli(list(argv))
    return capsys.readouterr().out


def _fails(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        registry_cli(list(argv))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_model_refs_parse() -> None:
    assert ModelRef.parse("grocery-ssl") == ModelRef("grocery-ssl")
    assert ModelRef.parse("grocery-ssl:3") == ModelRef("grocery-ssl", "3")
    assert ModelRef.parse("fuji@production") == ModelRef("fuji", alias="production")
    with pytest.raises(RegistryError, match="NAME@ALIAS"):
        ModelRef.parse("a@b@c")


def test_a_version_records_run_metrics_config_commit_and_hashes(
    sqlite_uri: str, toy_runs: tuple[Path, Path]
) -> None:
    _, run_dir = toy_runs
    summary = json.loads((run_dir / "training_summary.json").read_text())
    info = register_model(
        run_dir, "toy", metrics={"holdout/accuracy": 0.75}, aliases=["staging"], tracking_uri=sqlite_uri
    )

    assert info.version == "1" and set(info.aliases) == {LATEST, "staging"}
    record = info.record
    assert record["class_path"] == "toy_lightning.ToyModel" and record["run_name"] == run_dir.name
    assert Path(record["checkpoint"]).samefile(summary["best_checkpoint"])
    assert record["metrics"]["val/loss"] == pytest.approx(summary["final_metrics"]["val/loss"])
    assert (
        record["metrics"]["holdout/accuracy"] == 0.75
        and record["monitor"] == "val/loss"
        and record["mode"] == "min"
    )
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_commit"])
    assert set(record["sha256"]) == {WEIGHTS, "config.yaml", "training_summary.json"}

    # what MLflow itself holds: a version with tags, linked to a run, alias set, a pyfunc model
    client = MlflowClient(sqlite_uri)
    version = client.get_model_version("toy", "1")
    assert json.loads(version.tags["harvest.sha256"]) == record["sha256"]
    assert client.get_run(version.run_id).info.run_name == run_dir.name
    assert str(client.get_model_version_by_alias("toy", "staging").version) == "1"
    package = open_registry(sqlite_uri).download("toy@staging", "dl")
    assert (package.parent.parent / "MLmodel").is_file() and (package / "config.yaml").is_file()
    slim = torch.load(package / WEIGHTS, weights_only=True)
    assert (
        "optimizer_states" not in slim and slim["hyper_parameters"]["_class_path"] == "toy_lightning.ToyModel"
    )

    loaded = load_model("toy", alias="staging", tracking_uri=sqlite_uri)
    original = ToyModel.load_from_checkpoint(summary["best_checkpoint"], weights_only=True).eval()
    x = torch.randn(8, 4)
    assert not loaded.training and torch.equal(loaded.net(x), original.net(x))


def test_tampered_weights_are_refused(
    sqlite_uri: str, toy_runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow.pyfunc

    register_model(toy_runs[1], "toy", aliases=["production"], tracking_uri=sqlite_uri)
    (stored,) = Path("mlruns").rglob("package/" + WEIGHTS)
    stored.write_bytes(stored.read_bytes() + b"\0")

    with pytest.raises(IntegrityError, match=r"weights/model\.ckpt has SHA-256 .* refusing to load") as err:
        load_model("toy", tracking_uri=sqlite_uri)
    assert "toy@production" in str(err.value) and len(str(err.value).splitlines()) == 1
    use_mlflow_uri(monkeypatch, sqlite_uri)
    with pytest.raises(IntegrityError):  # the MLflow model checks its own manifest too
        mlflow.pyfunc.load_model("models:/toy@production")


def test_a_failed_registration_leaves_the_previous_alias_holder(
    sqlite_uri: str, toy_runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = open_registry(sqlite_uri)
    registry.register(toy_runs[0], "toy", aliases=["staging", "production"])
    real_set_alias = registry.backend.set_alias

    def server_dies_on_production(name: str, alias: str, version: str) -> None:  # fault injection
        if alias == "production":
            raise ConnectionError("tracking server went away")
        real_set_alias(name, alias, version)

    monkeypatch.setattr(registry.backend, "set_alias", server_dies_on_production)
    with pytest.raises(RegistryError) as err:
        registry.register(toy_runs[1], "toy", aliases=["staging", "production"])
    message = str(err.value)
    assert "tracking server went away" in message and "production still points to toy:1" in message
    assert "staging was put back on toy:1" in message and "nothing was registered" in message

    assert [v.version for v in registry.listing()] == ["1"]
    assert registry.resolve("toy@staging").version == registry.resolve("toy@production").version == "1"

    with pytest.raises(RegistryError, match="production still points to nothing; nothing was registered"):
        registry.register(toy_runs[1], "fresh", aliases=["production"])
    assert registry.backend.model_names() == ["toy"]  # no empty registered model left behind


def test_a_failed_promotion_keeps_the_alias(
    sqlite_uri: str, toy_runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = open_registry(sqlite_uri)
    registry.register(toy_runs[0], "toy", aliases=["production"])
    registry.register(toy_runs[1], "toy")

    def refuse(name: str, alias: str, version: str) -> None:  # fault injection: the store rejects the write
        raise PermissionError("read-only database")

    monkeypatch.setattr(registry.backend, "set_alias", refuse)
    with pytest.raises(
        RegistryError,
        match=r"alias 'production' to toy:2 failed \(read-only database\); production still points to toy:1",
    ):
        registry.promote("toy", 2, "production")
    monkeypatch.undo()
    assert registry.resolve("toy@production").version == "1"


def test_cli_lifecycle_register_list_compare_promote_load_download(
    sqlite_uri: str, toy_runs: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    short, longer = toy_runs
    uri = ["--tracking-uri", sqlite_uri]
    assert "Registered toy:1 (latest, staging)" in _cli(
        capsys, "register", str(short), "--name", "toy", "--alias", "staging", *uri
    )
    assert "Registered toy:2 (latest)" in _cli(
        capsys, "register", str(longer), "--name", "toy", "--metric", "extra/score=2", *uri
    )

    listing = _cli(capsys, "list", *uri)
    assert re.search(r"toy\s+│\s+1\s+│\s+staging", listing) and re.search(
        r"toy\s+│\s+2\s+│\s+latest", listing
    )

    table = _cli(capsys, "compare", "toy@staging", "toy@latest", *uri)
    versions = open_registry(sqlite_uri).compare(["toy:1", "toy:2"])
    rows = {metric: best for metric, _, best in compare_rows(versions)}
    best_loss = min((0, 1), key=lambda i: versions[i].metrics["val/loss"])
    assert (
        rows["val/loss"] == best_loss and rows["extra/score"] is None
    )  # a metric only one version has wins nothing
    (line,) = [ln for ln in table.splitlines() if "val/loss" in ln]
    assert line.count("★") == 1 and line.split("│")[2 + best_loss].strip().endswith("★")

    assert "production set (no version held it before) to version 1" in _cli(
        capsys, "promote", "toy", "--version", "1", "--to-alias", "production", *uri
    )
    assert "production moved from version 1 to version 2" in _cli(
        capsys, "promote", "toy", "--version", "2", "--to-alias", "production", *uri
    )
    err = _fails(capsys, "promote", "toy", "--version", "7", "--to-alias", "production", *uri)
    assert err == "harvest registry promote: toy has no version 7 (versions: 1, 2); nothing was changed."
    assert open_registry(sqlite_uri).resolve("toy@production").version == "2"
    assert "latest always names the newest" in _fails(
        capsys, "promote", "toy", "--version", "1", "--to-alias", "latest", *uri
    ).replace("'", "")

    assert "Loaded toy@production = toy:2: ToyModel, 10 parameters, SHA-256 verified" in _cli(
        capsys, "load", "toy@production", *uri
    )
    out = _cli(capsys, "download", "toy:1", "--dst", "models", *uri)
    assert "Downloaded toy:1" in out and (Path("models/toy-v1").rglob(WEIGHTS).__next__()).is_file()

    assert "already registered as toy:2, skipped" in _cli(
        capsys, "register-all", str(longer.parent), "--name", "toy", *uri
    )
    assert [v.version for v in open_registry(sqlite_uri).listing()] == ["1", "2"]


def test_cli_errors_are_one_line(sqlite_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = ["--tracking-uri", sqlite_uri]
    assert "nowhere: no such run directory" in _fails(capsys, "register", "nowhere", "--name", "x", *uri)
    torch.save({"state_dict": {}}, tmp_path / "bare.ckpt")
    assert "does not record its LightningModule class" in _fails(
        capsys, "register", str(tmp_path / "bare.ckpt"), "--name", "x", *uri
    )
    assert "no registered model named 'ghost'" in _fails(capsys, "compare", "ghost", *uri)
    assert "not valid" in _fails(
        capsys, "register", str(tmp_path / "bare.ckpt"), "--name", "x", "--alias", "bad alias", *uri
    )
    assert not Path("mlruns").exists() or not list(Path("mlruns").rglob("MLmodel")), (
        "nothing may be half-registered"
    )
