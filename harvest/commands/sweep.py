r"""``harvest sweep``: hyperparameter sweeps of ``harvest fit`` runs, with Optuna here or on W&B.

    harvest sweep --config configs/groceries_ssl.yaml --config configs/demo/groceries_cpu.yaml \\
        --sweep configs/sweeps/groceries_ssl.yaml --trials 8 [--storage sqlite:///optuna.db]
    harvest sweep --backend wandb --config configs/groceries_ssl.yaml --sweep configs/sweeps/groceries_ssl.yaml

The sweep file is checked against W&B's sweep schema and every swept key against what
``harvest fit`` accepts before the first trial. Every trial is a full ``harvest fit`` (run
directory, summary, trackers; no registry) named ``<study>_trial<NNN>``; the sweep writes
``<output>/<study>/results.json`` and ``best.yaml``, the best trial's swept and fixed values to
compose after the same configs. Arguments after ``--`` go to every trial (``-- --trainer.max_epochs=2``);
they may not fix a swept key. Several ``harvest sweep`` processes with the same ``--study-name``
and ``--storage`` share one study.
"""

from __future__ import annotations

import argparse
import logging
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from harvest.commands.main import split_passthrough
from harvest.sweeps.keys import check_conflicts, parse_fit_config, resolve_keys
from harvest.sweeps.optuna_study import run_optuna
from harvest.sweeps.report import register_best, report, write_results
from harvest.sweeps.space import SweepConfigError, SweepSpec, load_sweep
from harvest.sweeps.wandb_export import export_wandb

log = logging.getLogger(__name__)

_TEST_METRIC = re.compile(r"(^|[/_.])test([/_.]|$)")


def _key_mappings(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        name, sep, key = pair.partition("=")
        if not sep or not name or not key:
            raise SweepConfigError(f"--key {pair!r}: write NAME=HARVEST_KEY, e.g. --key lr=model.init_args.lr")
        mapping[name] = key
    return mapping


def prepare(args: argparse.Namespace, extra: list[str]) -> tuple[SweepSpec, Any]:
    """Load and check everything a sweep needs before its first trial; return the spec and the parsed fit config.

    Raises:
        SweepConfigError: The sweep file breaks W&B's schema, a swept key is not a ``harvest fit``
            key, or a fixed override sets a swept key.
    """
    spec = load_sweep(args.sweep, _key_mappings(args.key))
    config = parse_fit_config(args.config, extra)
    resolve_keys(spec, config)
    check_conflicts(spec, extra, config)
    if _TEST_METRIC.search(spec.metric):
        log.warning(
            "%s: the sweep selects on %s, a test metric: the test split then no longer measures the chosen "
            "model; sweep a validation metric (val/...) instead.",
            spec.path,
            spec.metric,
        )
    if "program" in spec.raw:
        log.info("%s: program %s is not used: every trial runs harvest fit.", spec.path, spec.raw["program"])
    return spec, config


def _configs_out_of(extra: list[str], configs: list[str]) -> tuple[list[str], list[str]]:
    """Move ``--config FILE`` found after ``--`` to the configs (they are part of the recipe, not overrides)."""
    configs, rest, args = list(configs), [], iter(extra)
    for arg in args:
        if arg == "--config":
            configs.append(next(args, ""))
        elif arg.startswith("--config="):
            configs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return configs, rest


def build_parser() -> argparse.ArgumentParser:
    """The ``harvest sweep`` argument parser."""
    parser = argparse.ArgumentParser(prog="harvest sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="harvest fit config (repeatable, last wins)")
    parser.add_argument("--sweep", required=True, help="sweep file in W&B format with harvest fit keys")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME=KEY",
        help="map a sweep-file parameter (or metric) name to a harvest fit key (or logged metric); repeatable",
    )
    parser.add_argument("--backend", choices=("optuna", "wandb"), default="optuna")
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help="trials of the whole study, all workers together (default: run_cap, else 10)",
    )
    parser.add_argument("--study-name", default=None, help="default: <sweep file stem>_<YYYYmmdd_HHMMSS>")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage shared by workers: sqlite:///sweeps.db (one machine), postgresql://... or "
        "mysql://... (many), or a journal file path on a shared file system (many)",
    )
    parser.add_argument("--seed", type=int, default=None, help="sampler seed (default: random, so workers differ)")
    parser.add_argument("--output", default="runs/sweeps", help="where the sweep's results folder is written")
    parser.add_argument("--register", metavar="NAME", default=None, help="register the best trial as model NAME")
    parser.add_argument("--registry-uri", default=None, help="registry for --register (default: the trials' own)")
    parser.add_argument("--project", default=None, help="W&B project (--backend wandb)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """``harvest sweep`` entry point."""
    argv, extra = split_passthrough(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config, extra = _configs_out_of(extra, args.config)
    spec, config = prepare(args, extra)
    study_name = args.study_name or f"{spec.path.stem}_{datetime.now():%Y%m%d_%H%M%S}"
    out_dir = Path(args.output) / study_name
    if args.backend == "wandb":
        export_wandb(spec, args.config, extra, config, out_dir, args.project)
        return
    trials = args.trials or spec.run_cap or 10
    if args.storage and not args.study_name:
        log.info("study %s in %s: more workers join it with --study-name %s", study_name, args.storage, study_name)
    study = run_optuna(
        spec,
        config,
        args.config,
        extra,
        trials,
        study_name,
        args.storage,
        args.seed,
        after_trial=lambda study: write_results(study, spec, args.config, out_dir),
    )
    results = report(study, spec, args.config, out_dir)
    if args.register:
        register_best(results, args.register, args.registry_uri)
