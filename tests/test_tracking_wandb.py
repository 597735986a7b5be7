"""W&B: exactly one run per DDP job, one run per fit in a process, offline without an API key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DDP_CPU, clear_run_name
from toy_lightning import QUIET_ARGS, TOY_ARGS
from wandb_records import OfflineRun

from harvest.commands.main import cli_main

TESTS = Path(__file__).resolve().parent
TOY = [*TOY_ARGS, "--trainer.max_epochs", "2"]
QUIET = QUIET_ARGS
WANDB = [
    "--trainer.logger", "WandbLogger",
    "--trainer.callbacks+", "ModelCheckpoint", "--trainer.callbacks.monitor", "val/loss",
    "--trainer.callbacks.save_last", "true",
    "--trainer.callbacks+", "WandbTracking", "--trainer.callbacks+", "CheckpointArtifacts",
]  # fmt: skip


@pytest.fixture
def no_wandb_key(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No API key anywhere (HOME without .netrc), W&B's own folders inside the test's folder, no service
    inherited from an earlier run of this process (``WANDB_SERVICE``)."""
    monkeypatch.setenv("HOME", str(in_tmp))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT", "WANDB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(in_tmp / name.lower()))
    clear_run_name()
    return in_tmp


def _offline_runs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("offline-run-*"))


# two processes starting torch, Lightning and wandb-core: ~20 s on two idle CPU cores; kept in the default
# suite because "one W&B run per DDP job" is a promise of the README
def test_ddp_job_is_one_wandb_run(no_wandb_key: Path) -> None:
    """Lightning's DDP launcher starts the command once per rank; W&B sees one run, said offline once."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    command = [sys.executable, "-m", "harvest", "fit", *TOY, *QUIET, *DDP_CPU, *WANDB]
    done = subprocess.run(command, cwd=no_wandb_key, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    (run_dir,) = (no_wandb_key / "runs").iterdir()
    (folder,) = _offline_runs(no_wandb_key)
    assert folder.parent == run_dir / "wandb"
    wandb_run = OfflineRun(folder)
    assert wandb_run.run.display_name == run_dir.name and wandb_run.run.project == "harvest-toy"
    assert wandb_run.config["trainer"]["strategy"] == "ddp" and len(wandb_run.metric("val/loss")) == 2
    assert {a for m in wandb_run.artifacts_of("model") for a in m.aliases} >= {"best", "latest"}
    offline = [line for line in done.stderr.splitlines() if line.startswith("W&B is offline")]
    assert len(offline) == 1 and f"`wandb sync {folder}`" in offline[0]


def test_each_fit_in_one_process_gets_its_own_run(
    no_wandb_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cli_main(["fit", *TOY, *QUIET, *WANDB, "--run_name", "toy_first"])
    monkeypatch.setenv("WANDB_PROJECT", "my-project")
    second = cli_main(["fit", *TOY, *QUIET, *WANDB, "--run_name", "toy_second"])

    runs = {OfflineRun(f).run.display_name: OfflineRun(f) for f in _offline_runs(no_wandb_key)}
    assert set(runs) == {"toy_first", "toy_second"}
    assert runs["toy_first"].run.run_id != runs["toy_second"].run.run_id
    assert runs["toy_first"].run.project == "harvest-toy" and runs["toy_second"].run.project == "my-project"
    assert runs["toy_second"].config["run_name"] == "toy_second"
    for cli, name in ((first, "toy_first"), (second, "toy_second")):
        assert Path(cli.trainer.default_root_dir).name == name
        assert len(runs[name].metric("val/loss")) == 2
