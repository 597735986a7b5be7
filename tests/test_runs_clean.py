"""``harvest runs clean``: old runs lose their checkpoints; registered models and the newest runs stay."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from registry_testing import migrated_store, sqlite_uri, train_toy  # noqa: F401 - fixtures

from harvest.commands.main import cli_main
from harvest.commands.runs import main as runs_cli
from harvest.registry.api import load_model, register_model

NAMES = [f"toy_20250101_00000{i}" for i in range(1, 5)]  # oldest first


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four finished toy runs (best and last checkpoints each), started one minute apart."""
    root = tmp_path_factory.mktemp("four_runs")
    for minute, name in enumerate(NAMES):
        run_dir = train_toy(root, name, "--trainer.max_epochs", "2")
        os.utime(run_dir / "config.yaml", (1_700_000_000 + 60 * minute,) * 2)
    return root / "runs"


@pytest.fixture
def runs(four_runs: Path, sqlite_uri: str) -> Path:
    """A private copy of the four runs in the test's folder, the oldest registered as ``toy:1``."""
    copied = Path(shutil.copytree(four_runs, "runs"))
    for minute, name in enumerate(NAMES):  # copytree keeps mtimes; make sure of the order anyway
        os.utime(copied / name / "config.yaml", (1_700_000_000 + 60 * minute,) * 2)
    register_model(copied / NAMES[0], "toy", tracking_uri=sqlite_uri)
    return copied


def _checkpoints(runs: Path, name: str) -> set[str]:
    return {p.name for p in (runs / name / "checkpoints").glob("*.ckpt")}


def _registered_file(runs: Path) -> Path:
    (registered,) = [p for p in (runs / NAMES[0] / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return registered


def test_dry_run_lists_old_checkpoints_and_deletes_nothing(
    runs: Path, sqlite_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {name: _checkpoints(runs, name) for name in NAMES}
    runs_cli(["clean", "--keep", "2", "--runs-dir", "runs", "--dry-run", "--registry", sqlite_uri])
    out = capsys.readouterr().out
    assert {name: _checkpoints(runs, name) for name in NAMES} == before
    assert NAMES[2] not in out and NAMES[3] not in out  # the two newest are not even listed
    assert out.count("would remove") == 4  # last.ckpt of the oldest, best and last of the second, total
    (kept,) = [line for line in out.splitlines() if line.startswith("kept")]
    assert str(_registered_file(runs)) in kept and kept.endswith("(registered toy:1 was built from it)")
    assert out.splitlines()[-1].startswith("would remove") and "in 3 paths" in out.splitlines()[-1]


def test_clean_removes_old_checkpoints_and_keeps_registered_files_and_new_runs(
    runs: Path, sqlite_uri: str
) -> None:
    newest = {name: _checkpoints(runs, name) for name in NAMES[2:]}
    registered = _registered_file(runs)
    removals = cli_main(["runs", "clean", "--keep", "2", "--runs-dir", "runs", "--registry", sqlite_uri])

    assert {name: _checkpoints(runs, name) for name in NAMES[2:]} == newest
    assert _checkpoints(runs, NAMES[1]) == set() and _checkpoints(runs, NAMES[0]) == {registered.name}
    for name in NAMES[:2]:  # the run's record stays: config, summary
        assert (runs / name / "config.yaml").is_file() and (runs / name / "training_summary.json").is_file()
    assert sum(r.size for r in removals if not r.keep) > 0
    assert not load_model("toy", alias="latest", tracking_uri=sqlite_uri).training


def test_registered_versions_are_copies_that_outlive_their_run_files(runs: Path, sqlite_uri: str) -> None:
    original = torch.load(_registered_file(runs), weights_only=True)["state_dict"]
    everything = ["--keep", "0", "--whole", "--include-registered"]
    runs_cli(["clean", *everything, "--runs-dir", "runs", "--registry", sqlite_uri])

    assert list(runs.iterdir()) == []
    loaded = load_model("toy", alias="latest", tracking_uri=sqlite_uri)  # verified against its SHA-256, weights_only
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.items())


def test_whole_removes_old_runs_except_one_a_registered_version_came_from(runs: Path, sqlite_uri: str) -> None:
    runs_cli(["clean", "--keep", "1", "--whole", "--runs-dir", "runs", "--registry", sqlite_uri])
    assert sorted(p.name for p in runs.iterdir()) == [NAMES[0], NAMES[3]]
    assert _checkpoints(runs, NAMES[0]) == {_registered_file(runs).name}


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, message in (
        (["clean", "--runs-dir", str(tmp_path / "nope")], f"--runs-dir {tmp_path / 'nope'}: no such folder"),
        (["clean", "--runs-dir", str(tmp_path), "--keep", "-1"], "--keep -1: give how many"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            runs_cli(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"harvest runs clean: {message}") and len(err.splitlines()) == 1
