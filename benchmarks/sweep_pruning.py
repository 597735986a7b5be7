"""Hyperband in ``harvest sweep``: epochs and time spent with and without pruning, on the same trials.

    python benchmarks/sweep_pruning.py [--epochs 3] [--image-size 32]

The scenario of issue 12: the grocery demo recipe, learning rate 1e-7 (clearly bad) against 1e-3,
Hyperband with ``min_iter 1`` and ``eta 2``, 3 epochs per trial. The learning rate is crossed with
three seeds, so a random search has six distinct configurations (each runs once). The same sweep
runs twice in one invocation, on the same synthetic data set (3 classes, 12 training images each)
and in the same trial order (same sampler seed): once with ``early_terminate`` and once without.
Prints per side the trials pruned, the epochs trained, the wall time, and the ratios; and which
trials were pruned after which epoch with what validation accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datamodules.synthetic import write_groceries  # noqa: E402
from harvest.commands.main import cli_main  # noqa: E402
from harvest.lightning_cli.run_setup import RUN_NAME_ENV  # noqa: E402

RECIPE = [str(REPO / "configs/groceries_ssl.yaml"), str(REPO / "configs/demo/groceries_cpu.yaml")]


def sweep(folder: Path, data: Path, epochs: int, image_size: int, hyperband: bool) -> tuple[dict, float]:
    spec = {
        "method": "random",
        "metric": {"name": "val/accuracy", "goal": "maximize"},
        "parameters": {
            "model.init_args.optimizer.init_args.lr": {"values": [1.0e-7, 1.0e-3]},
            "seed_everything": {"values": [1, 2, 3]},
        },
    }
    if hyperband:
        spec["early_terminate"] = {"type": "hyperband", "min_iter": 1, "eta": 2}
    path = folder / f"sweep_{hyperband}.yaml"
    path.write_text(yaml.safe_dump(spec))
    study = f"hb_{hyperband}"
    fixed = [
        f"--data.root={data}", f"--data.image_size={image_size}", "--data.batch_size=8",
        f"--trainer.max_epochs={epochs}", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    configs = [a for c in RECIPE for a in ("--config", c)]
    os.environ.pop(RUN_NAME_ENV, None)
    started = time.perf_counter()
    cli_main(
        ["sweep", *configs, "--sweep", str(path), "--trials", "6", "--seed", "0", "--study-name", study, "--", *fixed]
    )
    seconds = time.perf_counter() - started
    return json.loads((folder / "runs/sweeps" / study / "results.json").read_text()), seconds


def epochs_trained(results: dict) -> list[int]:
    return [len(t["reported"]) for t in results["trials"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweep-pruning-") as tmp:
        folder = Path(tmp)
        os.chdir(folder)
        data = write_groceries(
            folder / "DS2GROCERIES", num_classes=3, train_per_class=12, val_per_class=3, test_per_class=5,
            image_size=args.image_size,
        )  # fmt: skip
        sides = {
            name: sweep(folder, data, args.epochs, args.image_size, name == "hyperband")
            for name in ("hyperband", "none")
        }

    table = Table(title=f"harvest sweep, 6 trials x {args.epochs} epochs: Hyperband (min_iter 1, eta 2) against none")
    for column in ("side", "trials pruned", "epochs trained", "wall time", "best val/accuracy"):
        table.add_column(column)
    for name, (results, seconds) in sides.items():
        pruned = sum(t["state"] == "PRUNED" for t in results["trials"])
        best = results["best"]["value"] if results["best"] else None
        table.add_row(name, str(pruned), str(sum(epochs_trained(results))), f"{seconds:.0f} s", f"{best:.4f}")
    (hb, hb_s), (none, none_s) = sides["hyperband"], sides["none"]
    table.add_row("ratio", "", f"{sum(epochs_trained(hb)) / sum(epochs_trained(none)):.2f}", f"{hb_s / none_s:.2f}", "")
    console = Console()
    console.print(table)
    for trial in hb["trials"]:
        params = trial["params"]
        lr, seed = params["model.init_args.optimizer.init_args.lr"], params["seed_everything"]
        outcome = f"pruned after epoch {trial['pruned']['epoch']}" if trial["pruned"] else "ran to the end"
        reported = ", ".join(f"{v:.2f}" for v in trial["reported"].values())
        console.print(f"trial {trial['number']}: lr {lr:g}, seed {seed}: val/accuracy {reported}: {outcome}")


if __name__ == "__main__":
    main()
