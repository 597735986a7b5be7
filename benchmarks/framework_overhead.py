"""Framework overhead: a Harvest ``fit`` step against a bare PyTorch loop, on both pipelines' CPU demos.

    python benchmarks/framework_overhead.py [--pipelines groceries fuji] [--epochs N] [--threads 1]
                                            [--precision 32-true] [--no-loggers]

Each demo (``configs/<recipe>.yaml`` + ``configs/demo/<cpu>.yaml``) trains as ``harvest fit`` builds
it (its loggers, callbacks and precision; ``--no-loggers`` adds ``--trainer.logger false``) and after
every Harvest step a bare torchvision-reference-style step runs on a copy of the same network, on the
same training data, in the same precision (``benchmarks/fit_vs_bare.py``): both sides interleaved in
one process, under the same load. Prints per side the mean step time (the slowest 10% left out) and
their ratio, the median over steps of (Harvest step / the bare step right after it) ("paired ratio",
the steadiest on a shared machine), the ratio of CPU time per step, and images per second. Target:
ratio at most 1.03. Everything is written in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import torch
from fit_vs_bare import DEMOS, Sides, harvest_cli, images_per_second, interleaved_fit, paired_ratio, trimmed_mean
from rich.console import Console
from rich.table import Table


def measure(pipeline: str, epochs: int | None, extra: list[str]) -> tuple[str, Sides]:
    """One interleaved demo fit; the precision it ran in and both sides' measurements."""
    cli = harvest_cli(DEMOS[pipeline], [*extra, *(["--trainer.max_epochs", str(epochs)] if epochs else [])])
    precision = str(cli.trainer.precision)
    return precision, interleaved_fit(cli)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pipelines", nargs="+", choices=list(DEMOS), default=list(DEMOS))
    parser.add_argument("--epochs", type=int, default=None, help="epochs per demo (default: the demo's)")
    parser.add_argument("--precision", default=None, help="trainer.precision (default: the recipe's)")
    parser.add_argument("--no-loggers", action="store_true", help="run the demos with --trainer.logger false")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 steadies a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_MODE", "offline")
    extra = ["--trainer.logger", "false"] if args.no_loggers else []
    extra += ["--trainer.precision", args.precision] if args.precision else []
    console = Console(stderr=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="harvest_framework_overhead_") as folder:
        os.chdir(folder)
        for pipeline in args.pipelines:
            console.print(f"[bold]{pipeline}[/] demo, Harvest and bare steps interleaved")
            precision, sides = measure(pipeline, args.epochs, extra)
            rows.append((pipeline, precision, sides))

    threads = torch.get_num_threads()
    table = Table(title=f"Harvest fit step / bare PyTorch step (demo configs, {threads} torch threads)")
    labels = ("pipeline", "precision", "loggers")
    numbers = ("steps", "Harvest ms", "bare ms", "ratio", "paired ratio", "CPU ratio", "Harvest img/s", "bare img/s")
    for column in (*labels, *numbers):
        table.add_column(column, justify="left" if column in labels else "right")
    for pipeline, precision, sides in rows:
        harvest, bare = (trimmed_mean(sides.seconds[side]) for side in ("harvest", "bare"))
        cpu_harvest, cpu_bare = (trimmed_mean(sides.cpu[side]) for side in ("harvest", "bare"))
        table.add_row(
            pipeline,
            precision,
            "none" if args.no_loggers else "demo's",
            f"{len(sides.seconds['harvest'])} / {len(sides.seconds['bare'])}",
            f"{harvest * 1e3:.1f}",
            f"{bare * 1e3:.1f}",
            f"{harvest / bare:.3f}",
            f"{paired_ratio(sides):.3f}",
            f"{cpu_harvest / cpu_bare:.3f}",
            f"{images_per_second(sides, 'harvest'):.1f}",
            f"{images_per_second(sides, 'bare'):.1f}",
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
