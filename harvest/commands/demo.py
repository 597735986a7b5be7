"""``make demo``: both pipelines end to end on synthetic data in the real on-disk layouts.

Trains the semi-supervised grocery classifier and the Fuji apple Mask R-CNN with their demo
configs (each composed on top of the real recipe), logs to TensorBoard and to MLflow on a local
SQLite file, registers both models and prints the registry. Run ``python -m harvest.commands.demo --help``.
"""

from __future__ import annotations

import argparse
import logging
import sys

from harvest.commands.main import cli_main, configure_logging

log = logging.getLogger("harvest.commands.demo")  # not __name__: that is "__main__" under python -m

#: name -> (title, configs composed in order, last wins)
DEMOS: dict[str, tuple[str, list[str]]] = {
    "groceries": (
        "Semi-supervised grocery classification (synthetic DS2GROCERIES layout)",
        ["configs/groceries_ssl.yaml", "configs/demo/groceries_cpu.yaml"],
    ),
    "fuji": (
        "Fuji apple instance segmentation (synthetic Fuji-SfM layout)",
        ["configs/fuji_maskrcnn.yaml", "configs/demo/fuji_cpu.yaml"],
    ),
}


def run_demo(names: list[str], extra: list[str]) -> None:
    """Fit each named demo, then list the model registry.

    Args:
        names: Keys of :data:`DEMOS`, in order.
        extra: Extra CLI arguments appended to every ``harvest fit`` (e.g. ``--trainer.max_epochs 1``).
    """
    for name in names:
        title, configs = DEMOS[name]
        log.info(
            "\n=== %s ===\n$ harvest fit %s %s", title, " ".join(f"--config {c}" for c in configs), " ".join(extra)
        )
        cli_main(["fit", *(arg for c in configs for arg in ("--config", c)), *extra])
    from harvest.commands.registry import main as registry_main

    log.info("\n=== Model registry (MLflow, sqlite:///mlflow.db) ===\n$ harvest registry list")
    registry_main(["list"])
    log.info(
        "\nNext: tensorboard --logdir runs | mlflow ui --backend-store-uri sqlite:///mlflow.db"
        " | harvest registry compare <name>@latest ..."
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point of ``python -m harvest.commands.demo``."""
    parser = argparse.ArgumentParser(prog="python -m harvest.commands.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(DEMOS), action="append", help="run only this demo (repeatable)")
    args, extra = parser.parse_known_args(argv)
    sys.argv = sys.argv[:1]  # the demo's own flags are not harvest fit's (LightningCLI would warn)
    configure_logging()
    run_demo(args.only or list(DEMOS), extra)


if __name__ == "__main__":
    main()
