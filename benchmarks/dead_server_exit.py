"""Seconds a ``harvest fit`` takes to exit after training when its MLflow server died mid-run.

Starts a real ``mlflow server``, fits the toy pipeline (tests/toy_lightning.py) with asynchronous MLflow
logging, stops the server once two epochs are done and prints how long the process took to exit
after its summary said ``completed``, with MLflow's HTTP retry defaults and with Harvest's
(``callbacks.mlflow_tracking.HTTP_RETRY_DEFAULTS``), side by side::

    python benchmarks/dead_server_exit.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from mlflow_server import MlflowServer  # noqa: E402

MLFLOW_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2"}


def exit_seconds(folder: Path, extra_env: dict[str, str]) -> float:
    """Seconds from the run's ``completed`` summary to the process's exit."""
    server = MlflowServer(folder / "server").start()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1", **extra_env}
    args = [
        sys.executable, "-m", "harvest", "fit", "--model", "toy_lightning.ToyModel", "--data", "toy_lightning.ToyData",
        "--data.samples", "4096", "--trainer.max_epochs", "6", "--trainer.enable_progress_bar", "false",
        "--trainer.logger", "MLFlowLogger", "--trainer.logger.tracking_uri", server.uri,
        "--trainer.logger.synchronous", "false", "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+", "MLflowTracking", "--trainer.callbacks+", "TrainingSummary",
    ]  # fmt: skip
    with open(folder / "fit.log", "w") as log:
        process = subprocess.Popen(args, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        ended = None
        while process.poll() is None:
            for path in (folder / "runs").glob("*/training_summary.json"):
                try:
                    summary = json.loads(path.read_text())
                except (json.JSONDecodeError, OSError):
                    continue
                if summary.get("epochs_trained", 0) >= 2 and server.process and server.process.poll() is None:
                    server.stop()
                if ended is None and summary.get("status") == "completed":
                    ended = time.monotonic()
            time.sleep(0.05)
    server.stop()
    return time.monotonic() - ended if ended else float("nan")


def main() -> None:
    """Print both exit times and their ratio."""
    with tempfile.TemporaryDirectory() as tmp:
        default = exit_seconds(Path(tmp) / "mlflow_defaults", MLFLOW_DEFAULTS)
        harvest = exit_seconds(Path(tmp) / "harvest_defaults", {})
    print(f"{'HTTP retries':<28}{'exit after training (s)':>24}")
    print(f"{'MLflow (7, backoff 2)':<28}{default:>24.1f}")
    print(f"{'Harvest (2, backoff 1)':<28}{harvest:>24.1f}")
    print(f"ratio MLflow/Harvest: {default / harvest:.1f}")


if __name__ == "__main__":
    main()
