"""``harvest data describe|check``: a data set's card and its quality check, from a folder or the configs of ``fit``.

::

    harvest data check data/Fuji-SfM                      # the pipeline and the layout are detected
    harvest data describe data/DS2GROCERIES [--json true]
    harvest data check --config configs/fuji_maskrcnn.yaml --config configs/demo/fuji_cpu.yaml
    harvest data check --data GroceriesDataModule --data.root data/DS2GROCERIES

The ``data`` section is parsed exactly as ``harvest fit`` parses it (repeated ``--config``,
``--data.*`` overrides, short class names); a folder given as ``PATH`` is the data root (with a config:
it replaces ``data.root``). The other sections of a fit config are accepted and ignored: no model is
built, no weights are downloaded, no logger is started. ``check`` exits with status 1 when it finds errors.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from lightning.pytorch.cli import LightningArgumentParser
from rich.table import Table

from datamodules.detect import detect_pipeline
from harvest.core.console import console as output_console
from harvest.monitoring.dataset_card import build_card, check_dataset, short_hash

#: Sections of a ``fit`` config that ``harvest data`` accepts and ignores.
_FIT_SECTIONS = ("trainer", "model", "optimizer", "lr_scheduler", "seed_everything", "ckpt_path", "run_name")


def _command_parser(name: str, description: str) -> LightningArgumentParser:
    parser = LightningArgumentParser(prog=f"harvest data {name}", description=description)
    parser.add_argument("--config", action=ActionConfigFile, help="A fit config file (repeat to compose).")
    parser.add_argument(
        "path", nargs="?", default=None, help="Data folder; its pipeline and layout are detected (optional)."
    )
    parser.add_lightning_class_args(pl.LightningDataModule, "data", subclass_mode=True, required=False)
    for section in _FIT_SECTIONS:
        parser.add_argument(
            f"--{section}", type=Any, default=None, help="Accepted from fit configs; ignored."
        )
    return parser


def build_parser() -> ArgumentParser:
    """The ``harvest data`` parser with its ``describe`` and ``check`` subcommands."""
    importlib.import_module("datamodules")  # short class names: --data GroceriesDataModule
    parser = ArgumentParser(prog="harvest data", description=(__doc__ or "").splitlines()[0])
    commands = parser.add_subcommands(dest="command")
    describe = _command_parser(
        "describe", "Print the data set's card: content hash, splits, classes, imbalance."
    )
    describe.add_argument(
        "--json", type=bool, default=False, help="Print the card as JSON instead of tables."
    )
    commands.add_subcommand("describe", describe, help="Print the data set's card (no tracker needed).")
    check = _command_parser("check", "Check a data set; exit status 1 when errors are found.")
    check.add_argument(
        "--max_imbalance", type=float, default=10.0, help="Largest/smallest class count that warns."
    )
    commands.add_subcommand("check", check, help="Quality check; exit status 1 on errors.")
    return parser


def data_config(path: Path, data: Any) -> Any:
    """The ``data`` section for a folder: the given one with ``root`` replaced, else the detected pipeline's."""
    if data is not None:
        data.init_args.root = str(path)
        return data
    return Namespace(class_path=detect_pipeline(path), init_args=Namespace(root=str(path)))


def card_tables(card: dict[str, Any]) -> list[Table]:
    """The card as rich tables: an overview, then image counts per class and split."""
    overview = Table(title=f"Data set {card['name']}", show_header=False)
    overview.add_column(style="bold")
    overview.add_column(overflow="fold")
    balance = card.get("class_imbalance", {})
    rows = {
        "pipeline": card.get("pipeline"),
        "root": card.get("root"),
        "layout": card.get("layout"),
        "format": card.get("format"),
        "files": f"{card['files']} ({card['bytes'] / 1e6:.1f} MB)",
        "content hash": card["content_hash"],
        "classes": f"{card['num_classes']}: " + ", ".join(card.get("class_names", [])),
        "class imbalance": f"{balance.get('ratio')} ({balance.get('largest')} / {balance.get('smallest')})",
    }
    for key in ("sources", "labeled_split", "instances", "mask_area", "images_without_instances"):
        if key in card:
            rows[key.replace("_", " ")] = json.dumps(_rounded(card[key]))
    for key, value in rows.items():
        if value is not None:
            overview.add_row(key, str(value))
    splits = card.get("splits", {})
    counts = Table(title="Counts per class and split")
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
    for name in card.get("class_names", []):
        if any(name in s.get("per_class", {}) for s in splits.values()):  # not Mask R-CNN's "background"
            counts.add_row(name, *(str(s.get("per_class", {}).get(name, 0)) for s in splits.values()))
    counts.add_row("[bold]images", *(f"[bold]{s.get('images', 0)}" for s in splits.values()))
    return [overview, counts]


def _rounded(value: Any) -> Any:
    """``value`` with floats rounded to 4 significant digits, for display."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def _root_cause(error: BaseException) -> BaseException:
    """The data module's own error, not jsonargparse's wrapper around it."""
    while error.__cause__ or (error.__context__ and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    return error


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``harvest data`` with ``argv`` (default: ``sys.argv[2:]``); exits with status 1 on errors."""
    parser = build_parser()
    config = parser.parse_args(list(sys.argv[2:] if argv is None else argv))
    console, errors = output_console(), output_console(stderr=True)
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
    command = config[config.command]
    for section in _FIT_SECTIONS:  # never instantiated: no model, no weights download, no logger
        command[section] = None
    try:
        if command.path is not None:
            command.data = data_config(Path(command.path), command.data)
        elif command.data is None:
            raise ValueError("give a data folder (harvest data check FOLDER) or a fit config (--config FILE)")
        datamodule = instantiate(config)[config.command].data
    except (OSError, ValueError) as error:
        errors.print(f"harvest data {config.command}: {_root_cause(error)}", highlight=False, markup=False)
        raise SystemExit(2) from None
    if config.command == "describe":
        try:
            card = build_card(datamodule)
        except (OSError, ValueError) as error:
            errors.print(f"harvest data describe: {error}", highlight=False, markup=False)
            raise SystemExit(1) from None
        if config.describe.json:
            sys.stdout.write(json.dumps(card, indent=2) + "\n")
        else:
            for table in card_tables(card):
                console.print(table)
            console.print(
                f"content hash {short_hash(card)}: the same hash means the same data.", highlight=False
            )
        return
    findings = check_dataset(datamodule, max_imbalance=config.check.max_imbalance)
    count = sum(f.severity == "error" for f in findings)
    for finding in sorted(findings, key=lambda f: f.severity != "error"):  # one line each, errors first
        color = "red" if finding.severity == "error" else "yellow"
        console.print(f"[{color}]{finding.severity}[/{color}] ", end="")
        console.print(finding.message, markup=False, highlight=False)
    console.print(
        f"{count} errors, {len(findings) - count} warnings in {getattr(datamodule, 'root', '')}",
        highlight=False,
    )
    if count:
        raise SystemExit(1)
