"""Logger overhead: training step time with TensorBoard + W&B + MLflow against no logger, on the demo configs.

    python benchmarks/logger_overhead.py [--pipelines groceries fuji] [--epochs 3] [--repeats 2]

Each pipeline's demo recipe (``configs/<recipe>.yaml`` + ``configs/demo/<cpu>.yaml``, with their tracker,
dataset-card and plot callbacks) is trained ``repeats`` times per variant, the variants interleaved
(none, all, none, all...) so drift on a shared machine hits both alike. Step time is measured from
one ``on_train_batch_start`` to the next within an epoch: it includes the step, the loggers'
``log_metrics`` and every callback's batch hooks, and leaves out epoch ends (validation,
checkpoints, the SSL stage). The first ``warmup`` steps of each run are dropped. W&B runs offline
(no network in the measurement); MLflow writes asynchronously to SQLite. Everything lands in a
temporary folder. Prints the median and 90th-percentile step time per variant and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harvest.cli import HarvestCLI  # noqa: E402
from harvest.run_setup import RUN_NAME_ENV  # noqa: E402

PIPELINES = {
    "groceries": ["configs/groceries_ssl.yaml", "configs/demo/groceries_cpu.yaml"],
    "fuji": ["configs/fuji_maskrcnn.yaml", "configs/demo/fuji_cpu.yaml"],
}
VARIANTS = {
    "no logger": ["--trainer.logger", "false"],
    "TensorBoard + W&B + MLflow": ["--config", str(REPO / "configs" / "loggers" / "all.yaml")],
}


class StepTimer(pl.Callback):
    """Times from one training batch start to the next, within each epoch."""

    def __init__(self) -> None:
        self.starts: list[tuple[int, float]] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, idx: int
    ) -> None:
        self.starts.append((trainer.current_epoch, time.perf_counter()))

    def step_seconds(self, warmup: int) -> list[float]:
        pairs = zip(self.starts, self.starts[1:], strict=False)
        return [b - a for (ea, a), (eb, b) in pairs if ea == eb][warmup:]


def run(configs: list[str], variant: list[str], epochs: int, warmup: int) -> list[float]:
    """One training run of a recipe with the variant's loggers; its step times in seconds."""
    for name in (RUN_NAME_ENV, RUN_NAME_ENV + "_PID"):
        os.environ.pop(name, None)
    args = [arg for config in configs for arg in ("--config", str(REPO / config))]
    cli = HarvestCLI(args=[*args, *variant, "--trainer.max_epochs", str(epochs)], run=False)
    timer = StepTimer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return timer.step_seconds(warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per variant (interleaved).")
    parser.add_argument("--warmup", type=int, default=3, help="Steps dropped at the start of each run.")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    console = Console(stderr=True)
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="harvest_logger_overhead_") as folder:
        os.chdir(folder)
        for pipeline in args.pipelines:
            results[pipeline] = {name: [] for name in VARIANTS}
            for repeat in range(args.repeats):
                for name, variant in VARIANTS.items():
                    console.print(f"[bold]{pipeline}[/] run {repeat + 1}/{args.repeats}: {name}")
                    results[pipeline][name] += run(PIPELINES[pipeline], variant, args.epochs, args.warmup)

    table = Table(title="Training step time with and without loggers (demo configs, this machine)")
    for column in ("pipeline", "loggers", "steps", "median ms", "p90 ms", "ratio (median)"):
        table.add_column(column, justify="left" if column in ("pipeline", "loggers") else "right")
    for pipeline, variants in results.items():
        baseline = statistics.median(variants["no logger"])
        for name, seconds in variants.items():
            p90 = statistics.quantiles(seconds, n=10)[-1]
            ratio = statistics.median(seconds) / baseline
            table.add_row(
                pipeline,
                name,
                str(len(seconds)),
                f"{statistics.median(seconds) * 1e3:.1f}",
                f"{p90 * 1e3:.1f}",
                f"{ratio:.3f}",
            )
    Console().print(table)


if __name__ == "__main__":
    main()
