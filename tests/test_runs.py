"""Runs never lose work: a true last checkpoint, preemption, exact resume, runs that never overwrite runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import GROCERIES
from toy_lightning import QUIET_ARGS, TOY_ARGS

from harvest.commands.main import cli_main
from harvest.registry.package import git_commit
from harvest.runs import directory as rd

REPO = Path(__file__).resolve().parents[1]
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
SUMMARY = ["--trainer.callbacks+", "TrainingSummary"]
#: A checkpoint callback whose monitored value never improves after epoch 0.
NEVER_IMPROVES = [
    "--trainer.callbacks+", "RunCheckpoint", "--trainer.callbacks.monitor", "train/epoch_marker",
    "--trainer.callbacks.mode", "min", "--trainer.callbacks.save_last", "true",
]  # fmt: skip
MLFLOW = [
    "--trainer.logger", "MLFlowLogger", "--trainer.logger.tracking_uri", "sqlite:///mlflow.db",
    "--trainer.callbacks+", "MLflowTracking",
]  # fmt: skip
TOY = [*TOY_ARGS, *QUIET_ARGS, *SUMMARY]


@pytest.fixture(autouse=True)
def _isolated(in_tmp: Path) -> None:
    """Every test here runs in its own folder with no run directory left from an earlier CLI call."""


def _summary(folder: Path) -> dict:
    return json.loads((folder / "training_summary.json").read_text())


def _files(folder: Path) -> dict[str, bytes]:
    """Every file of a run with its bytes, its stage folders left out."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and rd.STAGES not in p.relative_to(folder).parts
    }


def _mlflow_runs(experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient("sqlite:///mlflow.db")
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def _harvest(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harvest", *args],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _signal_after_epochs(process: subprocess.Popen, epochs: int, signum: int, timeout: float = 240) -> Path:
    """Send ``signum`` once some run's summary has ``epochs`` epochs; return that run directory."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in Path("runs").glob("*/training_summary.json"):
            try:
                done = json.loads(path.read_text()).get("epochs_trained", 0)
            except (json.JSONDecodeError, OSError):
                continue
            if done >= epochs:
                process.send_signal(signum)
                return path.parent
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the run did not reach {epochs} epochs: {process.communicate()[0][-2000:]}")


# ---------------------------------------------------------------------- a true last checkpoint
def test_last_checkpoint_is_the_last_epoch_whatever_the_monitored_metric_did() -> None:
    cli = cli_main(["fit", *TOY, "--trainer.max_epochs", "3", "--trainer.logger", "false", *NEVER_IMPROVES])
    run = Path(cli.trainer.default_root_dir)
    summary = _summary(run)
    assert summary["best_epoch"] == 0 and torch.load(summary["best_checkpoint"], weights_only=True)["epoch"] == 0
    last = Path(summary["last_checkpoint"])
    assert last == (run / "checkpoints" / "last.ckpt").resolve()
    assert torch.load(last, weights_only=True)["epoch"] == 2  # the last completed epoch, not the best one


def test_installed_lightning_model_checkpoint_keeps_last_ckpt_at_the_best_epoch() -> None:
    """What RunCheckpoint fixes: Lightning 2.6's own ModelCheckpoint writes last.ckpt only on improvement."""
    plain = [arg if arg != "RunCheckpoint" else "ModelCheckpoint" for arg in NEVER_IMPROVES]
    cli = cli_main(["fit", *TOY, "--trainer.max_epochs", "3", "--trainer.logger", "false", *plain])
    last = Path(cli.trainer.default_root_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0


# ---------------------------------------------------------------------- names
def test_unique_directories_for_processes_started_in_the_same_second(tmp_path: Path) -> None:
    made: list[Path] = []
    threads = [threading.Thread(target=lambda: made.append(rd.create_unique(tmp_path, "x_1"))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 8 and all(folder.is_dir() for folder in made)


def test_two_fits_started_together_get_two_run_directories_and_both_finish() -> None:
    args = ["fit", *TOY, "--trainer.max_epochs", "2", "--trainer.logger", "false", *NEVER_IMPROVES]
    processes = [_harvest(*args), _harvest(*args)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    runs = sorted(Path("runs").iterdir())
    assert len(runs) == 2 and all(_summary(run)["status"] == "completed" for run in runs)


def test_an_existing_run_name_is_refused_unless_resumed_or_overwritten() -> None:
    args = ["fit", *TOY, "--trainer.logger", "false", *NEVER_IMPROVES, "--run_name", "mine"]
    cli_main([*args, "--trainer.max_epochs", "2"])
    run = Path("runs/mine")
    before = _files(run)
    with pytest.raises(FileExistsError, match=r"runs/mine already holds a run: resume it with --ckpt_path last"):
        cli_main([*args, "--trainer.max_epochs", "1"])
    assert _files(run) == before

    cli_main([*args, "--trainer.max_epochs", "3", "--ckpt_path", "last"])  # resumes: epoch 2 only is trained
    summary = _summary(run)
    assert [row["epoch"] for row in summary["history"]] == [0, 1, 2] and summary["status"] == "completed"

    cli_main([*args, "--trainer.max_epochs", "1", "--overwrite", "true"])
    assert [row["epoch"] for row in _summary(run)["history"]] == [0]


# ---------------------------------------------------------------------- reruns and stages
def test_rerun_and_test_of_a_run_leave_its_files_byte_identical() -> None:
    tensorboard = ["--trainer.logger+", "TensorBoardLogger", "--trainer.logger.save_dir", "runs"]
    cli = cli_main(["fit", *TOY, "--trainer.max_epochs", "2", *MLFLOW, *tensorboard, *NEVER_IMPROVES])
    run = Path(cli.trainer.default_root_dir)
    before = _files(run)
    fit_run = rd.run_record(run)["mlflow_run_id"]

    rerun = Path(cli_main(["fit", "--config", str(run / "config.yaml")]).trainer.default_root_dir)
    assert rerun != run and rerun.parent == run.parent
    assert _summary(rerun)["origin_run"] == run.name and _summary(rerun)["status"] == "completed"

    last = str(run / "checkpoints" / "last.ckpt")
    config = ["--config", str(run / "config.yaml"), "--ckpt_path", last]
    tested = Path(cli_main(["test", *config]).trainer.default_root_dir)
    predicted = Path(cli_main(["predict", *config]).trainer.default_root_dir)
    assert tested.parent == predicted.parent == run / "stages"
    assert tested.name.startswith("test_") and predicted.name.startswith("predict_")
    assert _files(run) == before  # summary, config, checkpoints and event files of the run untouched
    assert list(tested.glob("events.out.tfevents.*")) and _summary(tested)["status"] == "completed"

    by_name = {r.info.run_name: r for r in _mlflow_runs("toy")}
    assert set(by_name) == {run.name, rerun.name, f"{run.name}/{tested.name}"}  # predict opened no run
    test_run = by_name[f"{run.name}/{tested.name}"]
    assert test_run.data.tags["mlflow.parentRunId"] == fit_run
    assert test_run.data.tags["harvest.stage"] == "test" and test_run.data.tags["harvest.training_run"] == run.name
    assert by_name[rerun.name].data.tags["harvest.origin_run"] == run.name

    # provenance: the registry copies the commit the run recorded
    recorded = _summary(run)["git"]
    assert recorded["commit"] and git_commit(run).startswith(recorded["commit"])
    assert git_commit(predicted) == git_commit(run)


# ---------------------------------------------------------------------- preemption
PREEMPTION = [
    pytest.param(signal.SIGTERM, id="SIGTERM"),
    pytest.param(signal.SIGINT, id="SIGINT", marks=pytest.mark.slow),
    pytest.param(signal.SIGUSR1, id="SIGUSR1", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("signum", PREEMPTION)
def test_a_signal_saves_a_resumable_checkpoint_and_exits_non_zero(signum: int) -> None:
    args = [*TOY, *MLFLOW, *NEVER_IMPROVES, "--data.samples", "512"]
    process = _harvest("fit", *args, "--trainer.max_epochs", "100000")
    run = _signal_after_epochs(process, 2, signum)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 128 + signum, output
    assert f"resume with `harvest fit <same arguments> --run_name {run.name} --ckpt_path last`" in output

    summary = _summary(run)
    assert summary["status"] == "interrupted"
    reached = torch.load(summary["last_checkpoint"], weights_only=True)["epoch"]
    assert reached == summary["epochs_trained"] >= 2  # the epoch it was in when it stopped
    (killed,) = _mlflow_runs("toy")
    assert killed.info.status == "KILLED"

    cli_main(["fit", *args, "--trainer.max_epochs", str(reached + 2), "--run_name", run.name, "--ckpt_path", "last"])
    summary = _summary(run)
    assert summary["status"] == "completed"
    assert [row["epoch"] for row in summary["history"]] == list(range(reached + 2))  # each epoch once
    (resumed,) = _mlflow_runs("toy")  # the same MLflow run, continued
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"


@pytest.mark.slow
def test_sigkill_after_epoch_two_then_resume_ends_as_the_uninterrupted_run(tiny_groceries: Path) -> None:
    args = [
        "fit", *GROCERIES, "--data.root", str(tiny_groceries), "--data.image_size", "32", "--data.batch_size", "8",
        "--trainer.max_epochs", "4", "--seed_everything", "42", "--trainer.deterministic", "true",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    whole = _harvest(*args, "--run_name", "whole")
    assert whole.wait(timeout=600) == 0, whole.communicate()[0]

    killed = _harvest(*args, "--run_name", "killed")
    while not (Path("runs/killed") / "training_summary.json").is_file() or _summary(Path("runs/killed"))[
        "epochs_trained"
    ] < 2:
        assert killed.poll() is None, killed.communicate()[0]
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert _summary(Path("runs/killed"))["epochs_trained"] < 4

    resumed = _harvest(*args, "--run_name", "killed", "--ckpt_path", "last")
    assert resumed.wait(timeout=600) == 0, resumed.communicate()[0]

    expected, got = _summary(Path("runs/whole")), _summary(Path("runs/killed"))
    assert [row["epoch"] for row in got["history"]] == [0, 1, 2, 3]
    for want, have in zip(expected["history"], got["history"], strict=True):
        assert {k: v for k, v in have.items() if "seconds" not in k} == {
            k: v for k, v in want.items() if "seconds" not in k
        }
    metrics = {k: v for k, v in got["final_metrics"].items() if not k.startswith("timing/")}
    assert metrics == {k: v for k, v in expected["final_metrics"].items() if not k.startswith("timing/")}
    names = [r.info.run_name for r in _mlflow_runs("groceries_ssl")]
    assert sorted(names) == ["killed", "whole"]  # one MLflow run for the killed-and-resumed run


# ---------------------------------------------------------------------- launchers
@pytest.mark.slow
def test_torchrun_ranks_agree_on_one_run_directory() -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harvest",
        "fit", *TOY, "--trainer.max_epochs", "2", "--trainer.logger", "false", *NEVER_IMPROVES,
        "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2",
    ]  # fmt: skip
    done = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = Path("runs").iterdir()
    assert run.name.startswith("toy_job")
    summary = _summary(run)
    assert summary["status"] == "completed" and summary["epochs_trained"] == 2
