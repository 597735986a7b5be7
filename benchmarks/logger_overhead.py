"""Logger overhead: training step time with TensorBoard + W&B + MLflow against no logger, on the demo configs.

    python benchmarks/logger_overhead.py [--pipelines groceries fuji] [--epochs 4] [--repeats 1]
                                         [--preset all|tensorboard|mlflow|wandb]

Each pipeline's demo recipe (``configs/<recipe>.yaml`` + ``configs/demo/<cpu>.yaml``, with its tracker,
dataset-card and plot callbacks) trains with the preset's loggers (``configs/loggers/<preset>.yaml``)
attached, and the loggers are switched on and off in alternating blocks of ``log_every_n_steps``
training steps (each block holds exactly one logging step), so both sides are measured in the same
run, on the same data, under the same load: on a machine shared with other jobs, separate runs
differ by more than the loggers cost. Epoch ends (validation, checkpoints, epoch metrics) always log.

A step is timed from one ``on_train_batch_start`` to the next within an epoch: the step itself, the
loggers' ``log_metrics`` and every callback's batch hooks. Background work of the loggers (MLflow's
logging thread, W&B's service process) runs during both sides alike; on a dedicated machine with
spare cores it does not slow the loop. W&B runs offline, MLflow writes asynchronously to SQLite,
everything lands in a temporary folder. Prints per side the mean wall time and the mean CPU time of
this process (all its threads) per step, the slowest 10% of each left out, their ratios, and the
time per step spent inside the loggers' own calls (what the loop waits for; noise-free). On a
machine shared with other jobs, ``--threads 1`` steadies the step times.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from fit_vs_bare import DEMOS as PIPELINES
from fit_vs_bare import harvest_cli, trimmed_mean
from rich.console import Console
from rich.table import Table


class AlternatingLoggers(pl.Callback):
    """Switches the loggers off in every other block of ``log_every_n_steps`` steps; times the steps.

    Also adds up the time spent inside the loggers' ``log_metrics`` and ``save`` during training
    steps: what the loop waits for, without the noise of a shared machine.
    """

    def __init__(self) -> None:
        self.loggers: list = []
        self.times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        self.in_calls = 0.0
        self._last: tuple[int, float, float, bool] | None = None
        self._in_step = False

    def _timed(self, method: Callable) -> Callable:
        def timed(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self.in_calls += (time.perf_counter() - start) if self._in_step else 0.0

        return timed

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.loggers = list(trainer.loggers)
        for logger in self.loggers:
            for name in ("log_metrics", "save"):
                setattr(logger, name, self._timed(getattr(logger, name)))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: object, idx: int
    ) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self._last is not None and self._last[0] == trainer.current_epoch:
            self.times[self._last[3]].append((now - self._last[1], cpu - self._last[2]))
        logging_on = (trainer.global_step // trainer.log_every_n_steps) % 2 == 0
        trainer.loggers = self.loggers if logging_on else []
        self._in_step = True
        self._last = (trainer.current_epoch, time.perf_counter(), time.process_time(), logging_on)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._in_step = False

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._in_step = False
        trainer.loggers = self.loggers  # epoch ends always log


def run(configs: list[str], preset: str, epochs: int) -> AlternatingLoggers:
    """One training run of a recipe with the preset's loggers switched on and off; its measurements."""
    cli = harvest_cli([*configs, f"configs/loggers/{preset}.yaml"], ["--trainer.max_epochs", str(epochs)])
    alternating = AlternatingLoggers()
    cli.trainer.callbacks.append(alternating)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return alternating


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", choices=list(PIPELINES), default=list(PIPELINES))
    parser.add_argument("--preset", choices=["all", "tensorboard", "mlflow", "wandb"], default="all")
    parser.add_argument("--epochs", type=int, default=4, help="Epochs per run.")
    parser.add_argument("--repeats", type=int, default=1, help="Runs per pipeline.")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1 steadies a shared machine)."
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    console = Console(stderr=True)
    results: dict[str, dict[bool, list[tuple[float, float]]]] = {}
    in_calls: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="harvest_logger_overhead_") as folder:
        os.chdir(folder)
        for pipeline in args.pipelines:
            results[pipeline], in_calls[pipeline] = {True: [], False: []}, 0.0
            for repeat in range(args.repeats):
                console.print(
                    f"[bold]{pipeline}[/] run {repeat + 1}/{args.repeats} with loggers: {args.preset}"
                )
                measured = run(PIPELINES[pipeline], args.preset, args.epochs)
                for side, steps in measured.times.items():
                    results[pipeline][side] += steps
                in_calls[pipeline] += measured.in_calls

    names = {"all": "all three", "tensorboard": "TensorBoard", "mlflow": "MLflow", "wandb": "W&B"}
    table = Table(
        title=f"Step time, loggers on/off in alternating blocks (demo configs, {os.cpu_count()} CPUs)"
    )
    columns = ("pipeline", "loggers", "steps", "wall ms", "ratio", "CPU ms", "ratio", "in loggers ms")
    for column in columns:
        table.add_column(column, justify="left" if column in ("pipeline", "loggers") else "right")
    for pipeline, sides in results.items():
        base_wall, base_cpu = (trimmed_mean([step[k] for step in sides[False]]) for k in (0, 1))
        for side, label in ((False, "none"), (True, names[args.preset])):
            wall, cpu = (trimmed_mean([step[k] for step in sides[side]]) for k in (0, 1))
            waited = f"{in_calls[pipeline] / len(sides[True]) * 1e3:.2f}" if side else "-"
            row = [
                f"{wall * 1e3:.1f}",
                f"{wall / base_wall:.3f}",
                f"{cpu * 1e3:.1f}",
                f"{cpu / base_cpu:.3f}",
                waited,
            ]
            table.add_row(pipeline, label, str(len(sides[side])), *row)
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
