"""The CLI plumbing every pipeline shares: run layout, precision fallback, summary, report, config."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import torch
import yaml
from conftest import DDP_CPU
from jsonargparse import Namespace
from toy_lightning import CHECKPOINT_ARGS, QUIET_ARGS, TOY_ARGS

from harvest.commands.main import cli_main
from harvest.core.precision import cpu_computes_natively
from harvest.lightning_cli.run_setup import apply_run_layout, prepare_run_dir, resolve_precision

TOY, FAST, CHECKPOINT = TOY_ARGS, QUIET_ARGS, CHECKPOINT_ARGS
SUMMARY = ["--trainer.callbacks+", "TrainingSummary"]


@pytest.fixture(autouse=True)
def _isolated(in_tmp: Path) -> None:
    """Every test here runs in its own folder with no run name left from an earlier CLI call."""


def _run_dir() -> Path:
    (run_dir,) = Path("runs").iterdir()
    return run_dir


def test_fit_lays_out_one_run_directory_with_config_checkpoints_and_summary() -> None:
    tensorboard = ["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "runs"]
    cli_main(["fit", *TOY, "--trainer.max_epochs", "3", *FAST, *tensorboard, *CHECKPOINT, *SUMMARY])

    run_dir = _run_dir()
    assert run_dir.name.startswith("toy_") and datetime.strptime(run_dir.name[4:], "%Y%m%d_%H%M%S")
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} >= {"last.ckpt"}
    assert list(run_dir.glob("events.out.tfevents.*")), "TensorBoard events belong in the run directory"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())  # reruns as a new run: no directory pinned
    assert saved["run_name"] is None and saved["trainer"]["default_root_dir"] is None
    assert saved["origin_run"] == run_dir.name

    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_trained"] == 3
    assert summary["monitor"] == "val/loss" and summary["mode"] == "min"
    scores = [row["val/loss"] for row in summary["history"]]
    assert summary["best_score"] == pytest.approx(min(scores))
    assert summary["best_epoch"] == scores.index(min(scores))
    assert Path(summary["best_checkpoint"]).is_file() and Path(summary["last_checkpoint"]).name == "last.ckpt"
    # what the module logs in its own on_train_epoch_end belongs to the same epoch's row
    assert [row["train/epoch_marker"] for row in summary["history"]] == [0.0, 1.0, 2.0]
    assert summary["final_metrics"]["train/loss"] == summary["history"][-1]["train/loss"]
    assert len(summary["timing"]["epoch_seconds"]) == 3 and summary["timing"]["fit_seconds"] > 0


def test_summary_is_written_without_any_logger_and_updated_by_test() -> None:
    cli = cli_main(
        ["fit", *TOY, "--trainer.max_epochs", "1", "--trainer.logger", "false", *FAST, *CHECKPOINT, *SUMMARY]
    )
    run_dir = _run_dir()
    ckpt = cli.trainer.checkpoint_callback.best_model_path
    fitted = (run_dir / "training_summary.json").read_bytes()
    cli = cli_main(
        ["test", *TOY, "--run_name", run_dir.name, "--trainer.logger", "false", *FAST, *SUMMARY, "--ckpt_path", ckpt]
    )

    stage = Path(cli.trainer.default_root_dir)  # a stage folder of the run; the run's own summary is untouched
    assert stage.parent == run_dir / "stages" and stage.name.startswith("test_")
    assert (run_dir / "training_summary.json").read_bytes() == fitted
    summary = json.loads((stage / "training_summary.json").read_text())
    assert summary["stage"] == "test" and summary["status"] == "completed"
    assert summary["training_run"] == str(run_dir)
    assert 0.0 <= summary["final_metrics"]["toy/test_accuracy"] <= 1.0


def test_fast_dev_run_writes_a_summary_but_no_checkpoints() -> None:
    cli_main(["fit", *TOY, "--trainer.fast_dev_run", "true", *FAST, *SUMMARY])
    run_dir = _run_dir()
    assert json.loads((run_dir / "training_summary.json").read_text())["epochs_trained"] == 1
    assert not (run_dir / "checkpoints").exists()


def test_run_report_prints_the_table_and_where_outputs_are(capsys: pytest.CaptureFixture[str]) -> None:
    report = ["--trainer.callbacks+", "RunReport", "--trainer.callbacks.metrics", "[train/*, val/*]"]
    cli_main(["fit", *TOY, "--trainer.max_epochs", "1", "--trainer.logger", "false", *FAST, *CHECKPOINT, *report])
    out = capsys.readouterr().out
    assert "loss" in out and "val" in out and "train" in out
    assert f"run directory: {_run_dir()}" in out


def _plan(subcommand: str = "fit", **values: object) -> Path:
    config = Namespace(trainer=Namespace(default_root_dir=None), run_name=None, ckpt_path=None, overwrite=False)
    for key, value in values.items():
        config[key] = value
    return prepare_run_dir(subcommand, config, "toy")


def test_run_directory_is_shared_with_child_processes_only() -> None:
    first = _plan()
    assert first.parent == Path("runs") and first.is_dir() and datetime.strptime(first.name[4:], "%Y%m%d_%H%M%S")
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from jsonargparse import Namespace; from harvest.lightning_cli.run_setup import prepare_run_dir; "
            "print(prepare_run_dir('fit', Namespace(trainer=Namespace(default_root_dir=None)), 'x'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.strip() == str(first)  # a DDP rank launched by this process gets the same directory
    second = _plan()  # a second run in the same process (a sweep, the demo) gets its own, even in the same second
    assert second != first and second.parent == first.parent
    assert _plan(run_name="mine") == Path("runs/mine")


def test_layout_fills_defaults_and_keeps_what_the_user_set() -> None:
    trainer = Namespace(
        default_root_dir=None,
        logger=[
            Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger", init_args=Namespace(save_dir="runs")),
            Namespace(
                class_path="lightning.pytorch.loggers.MLFlowLogger",
                init_args=Namespace(experiment_name="mine", run_name=None),
            ),
        ],
        callbacks=[
            Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath=None)),
            Namespace(class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath="keep")),
        ],
    )
    run_dir = apply_run_layout(trainer, Path("runs/toy_1"), "toy")
    assert run_dir == Path("runs/toy_1") and trainer.default_root_dir == "runs/toy_1"
    tensorboard, mlflow = trainer.logger
    assert (tensorboard.init_args.save_dir, tensorboard.init_args.name, tensorboard.init_args.version) == (
        "runs",
        "toy_1",
        "",
    )
    assert (mlflow.init_args.experiment_name, mlflow.init_args.run_name) == ("mine", "toy_1")
    assert [c.init_args.dirpath for c in trainer.callbacks] == ["runs/toy_1/checkpoints", "keep"]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_autocast_precision_runs_where_fast_and_falls_back_in_one_line_elsewhere() -> None:
    records = _Records()
    logging.getLogger("harvest.lightning_cli.run_setup").addHandler(records)
    trainer = Namespace(precision="bf16-mixed", accelerator="auto")
    try:
        resolve_precision(trainer)
    finally:
        logging.getLogger("harvest.lightning_cli.run_setup").removeHandler(records)
    if torch.cuda.is_available() or cpu_computes_natively("bf16"):  # this project's CPU has AVX512-BF16
        assert trainer.precision == "bf16-mixed" and records.messages == []
    else:
        assert trainer.precision == "32-true"
        assert records.messages == [
            "precision=bf16-mixed needs a CUDA GPU or a CPU with AVX512-BF16 or AMX-BF16 and this machine "
            "has neither: running in 32-true instead."
        ]
    for kept in ("32-true", "bf16-true"):  # bf16-true is an explicit choice (Mask R-CNN refuses it by name)
        trainer = Namespace(precision=kept, accelerator="auto")
        resolve_precision(trainer)
        assert trainer.precision == kept


def test_ddp_on_cpu_gives_both_ranks_one_run_directory(tmp_path: Path) -> None:
    """Lightning's DDP launcher starts the command again per rank; both must agree on the run."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    command = [
        sys.executable,
        "-m",
        "harvest",
        "fit",
        *TOY,
        "--trainer.max_epochs",
        "2",
        *DDP_CPU,
        "--trainer.logger",
        "false",
        *FAST,
        *CHECKPOINT,
        *SUMMARY,
    ]
    subprocess.run(command, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=300)

    run_dir = _run_dir()
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_trained"] == 2
    assert Path(summary["best_checkpoint"]).parent.resolve() == (run_dir / "checkpoints").resolve()
    assert [p.name for p in Path("runs").iterdir()] == [run_dir.name]


def test_the_command_shows_a_user_error_as_one_line_without_a_traceback(tmp_path: Path) -> None:
    config = Path(__file__).resolve().parents[1] / "configs" / "groceries_ssl.yaml"
    command = [sys.executable, "-m", "harvest", "fit", "--config", str(config), "--data.root", "no/such/folder"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("harvest: error: DS2GROCERIES not found: no/such/folder/train is missing.")
    )
    debug = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HARVEST_DEBUG": "1"}
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr
