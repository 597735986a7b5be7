"""``harvest registry``: register, list, compare, promote, load, download, predict with, export and serve models.

Examples::

    harvest registry register runs/groceries_20250101_120000 --name grocery-ssl-classifier --alias staging
    harvest registry register-all runs
    harvest registry list
    harvest registry compare grocery-ssl-classifier:1 grocery-ssl-classifier@staging
    harvest registry promote grocery-ssl-classifier --version 2 --to-alias production
    harvest registry load grocery-ssl-classifier@production
    harvest registry download fuji-maskrcnn@production --dst models/
    harvest registry predict grocery-ssl-classifier@production --images incoming/ --output predictions.jsonl
    harvest registry predict fuji-maskrcnn@production --images orchard/ --coco detections.json --overlays overlays/
    harvest registry export grocery-ssl-classifier@production --format onnx --output grocer.onnx
    harvest registry serve grocery-ssl-classifier@production --port 5001

The registry is MLflow's at ``--tracking-uri`` (default ``$MLFLOW_TRACKING_URI`` or
``sqlite:///mlflow.db``), or the W&B Registry with ``--tracking-uri wandb://ENTITY/PROJECT``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harvest.core.console import console as output_console
from harvest.registry.api import Registry, RegistryError, VersionInfo, default_uri, open_registry
from harvest.serving.model import InputError

BEST = "★"
_LOWER_IS_BETTER = re.compile(r"loss|error|seconds|time|rmse|mae", re.IGNORECASE)


def _metric(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--metric {text!r}: write NAME=NUMBER, e.g. --metric test_accuracy=0.87"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """Build the ``harvest registry`` argument parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI, or wandb://ENTITY/PROJECT (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    parser = argparse.ArgumentParser(
        prog="harvest registry",
        description="Register, compare, promote and load trained models; predict with, export and serve them.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n", 2)[2].replace("Examples::", "examples:"),
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "register", parents=[common], help="register a run's best checkpoint (or a .ckpt) as a new version"
    )
    p.add_argument("path", metavar="PATH_OR_RUN", help="run directory, checkpoint file or run name under runs/")
    p.add_argument("--name", required=True, help="registered model name, e.g. grocery-ssl-classifier")
    p.add_argument(
        "--metric",
        type=_metric,
        action="append",
        default=[],
        help="NAME=VALUE to record besides the run's metrics (repeatable)",
    )
    p.add_argument(
        "--alias",
        action="append",
        default=[],
        help="alias to point at the new version, e.g. staging (repeatable; latest is implied)",
    )

    p = sub.add_parser(
        "register-all", parents=[common], help="register the best checkpoint of every run under a folder"
    )
    p.add_argument("folder", help="folder of run directories, e.g. runs")
    p.add_argument(
        "--name",
        default=None,
        help="registered model name for all runs (default: each run's pipeline, e.g. groceries)",
    )
    p.add_argument("--alias", action="append", default=[], help="alias for each new version (repeatable)")

    sub.add_parser("list", parents=[common], help="every registered model and version with its aliases")

    p = sub.add_parser(
        "compare", parents=[common], help="metrics of several versions side by side, best marked " + BEST
    )
    p.add_argument("refs", nargs="+", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument("--metrics", nargs="+", default=["*"], help="metric names or glob patterns to show (default: all)")

    p = sub.add_parser("promote", parents=[common], help="point an alias (production, staging…) at a version")
    p.add_argument("name")
    p.add_argument("--version", required=True, help="version to promote")
    p.add_argument("--to-alias", default="production", help="alias to move (default: %(default)s)")

    p = sub.add_parser(
        "load",
        parents=[common],
        help="download, verify and load a version (a smoke test of what serving gets)",
    )
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")

    p = sub.add_parser("download", parents=[common], help="download a version's files (SHA-256 checked)")
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument("--dst", default="models", help="folder to download into (default: %(default)s/NAME-vVERSION)")

    p = sub.add_parser("predict", parents=[common], help="predict a folder of images: one JSON line per image")
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument("--images", required=True, help="folder of .jpg/.jpeg/.png images (searched recursively)")
    p.add_argument("--output", type=Path, default=None, help="JSON-lines file to write (default: standard output)")
    p.add_argument("--coco", type=Path, default=None, help="detectors: also write a COCO results file here")
    p.add_argument("--overlays", type=Path, default=None, help="detectors: draw the detections into this folder")
    p.add_argument("--min-score", type=float, default=0.5, help="score a detection needs to be drawn (overlays)")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: %(default)s)")

    p = sub.add_parser("export", parents=[common], help="export to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx", help="default: %(default)s")
    p.add_argument("--output", type=Path, required=True, help="file to write, e.g. model.onnx (plus FILE.json)")
    p.add_argument("--images", type=Path, default=None, help="folder whose first images the check uses")
    p.add_argument(
        "--head", choices=["served", "cnn"], default="served",
        help="classifiers: the predictor the registry serves (SSL algorithm) or the CNN head (default: %(default)s)",
    )  # fmt: skip

    p = sub.add_parser(
        "serve", parents=[common], help="serve a version over HTTP (mlflow models serve, this environment)"
    )
    p.add_argument("ref", metavar="NAME[:VERSION|@ALIAS]")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=5001, help="port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1, help="server worker processes (default: %(default)s)")
    return parser


def lower_is_better(metric: str, versions: Sequence[VersionInfo] = ()) -> bool:
    """Whether lower is better: the recorded ``mode`` of a version that monitored it, else the name."""
    for version in versions:
        if version.record.get("monitor") == metric:
            return version.record.get("mode") == "min"
    return bool(_LOWER_IS_BETTER.search(metric))


def compare_rows(versions: Sequence[VersionInfo]) -> list[tuple[str, list[float | None], int | None]]:
    """One row per metric any version has: values side by side, index of the best (None: a tie or alone)."""
    names = sorted({m for v in versions for m in v.metrics})
    rows = []
    for metric in names:
        values = [v.metrics.get(metric) for v in versions]
        present = [(value, i) for i, value in enumerate(values) if value is not None]
        best = None
        if len(present) > 1 and len({value for value, _ in present}) > 1:
            pick = min if lower_is_better(metric, versions) else max
            best = pick(present)[1]
        rows.append((metric, values, best))
    return rows


def _aliases(info: VersionInfo) -> str:
    return ", ".join(info.aliases) or "-"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def listing_table(versions: Sequence[VersionInfo], title: str) -> Table:
    """Build the ``list`` table: one row per version (``compare`` adds data set and commit)."""
    table = Table(title=title)
    for column in ("model", "version", "aliases", "monitored metric", "run", "registered (UTC)"):
        table.add_column(column, justify="right" if column == "version" else "left", overflow="fold")
    for info in versions:
        monitor = info.record.get("monitor")
        score = f"{monitor} = {_fmt(info.metrics.get(monitor))}" if monitor else "-"
        created = (info.record.get("created") or "-")[:16].replace("T", " ")
        table.add_row(info.name, info.version, _aliases(info), score, info.record.get("run_name") or "-", created)
    return table


def print_listing(tracking_uri: str | None = None, console: Console | None = None) -> list[VersionInfo]:
    """Print ``harvest registry list`` (what ``make demo`` shows at its end) and return the versions."""
    registry = open_registry(tracking_uri)
    versions = registry.listing()
    console = console or output_console()
    if versions:
        console.print(listing_table(versions, f"Model registry ({registry.uri})"))
    else:
        console.print(f"No registered models at {registry.uri}.")
    return versions


def compare_table(versions: Sequence[VersionInfo], patterns: Sequence[str] = ("*",)) -> Table:
    """Metrics side by side (best marked), then where each version came from."""
    table = Table(title=f"{BEST} best of the row (higher is better, lower for losses, errors and times)")
    table.add_column("metric")
    for info in versions:
        table.add_column(info.label, justify="right")
    for metric, values, best in compare_rows(versions):
        if any(fnmatch(metric, p) for p in patterns):
            table.add_row(metric, *(_fmt(v) + (f" {BEST}" if i == best else "") for i, v in enumerate(values)))
    table.add_section()
    for label, key, width in (
        ("aliases", None, 0),
        ("run", "run_name", 0),
        ("dataset", "dataset_hash", 12),
        ("commit", "git_commit", 8),
    ):
        cells = [_aliases(v) if key is None else (v.record.get(key) or "-") for v in versions]
        table.add_row(label, *(c[:width] if width else c for c in cells))
    return table


def _register_all(registry: Registry, folder: Path, name: str | None, aliases: list[str], console: Console) -> int:
    runs = sorted(
        p
        for p in folder.iterdir()
        if p.is_dir() and ((p / "training_summary.json").is_file() or (p / "checkpoints").is_dir())
    )
    if not runs:
        raise RegistryError(
            f"{folder} holds no run directories (with training_summary.json or checkpoints/): nothing to do."
        )
    failures = 0
    for run in runs:
        try:
            model = name or registry.pipeline_of(run).replace("_", "-")
            existing = registry.find_registered(run, model)
            if existing is not None:
                console.print(f"{run}: already registered as {existing.label}, skipped")
                continue
            info = registry.register(run, model, aliases=aliases)
            console.print(f"{run}: registered as {info.label} ({_aliases(info)})")
        except RegistryError as err:
            failures += 1
            console.print(f"{run}: not registered: {err}")
    return failures


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``harvest registry`` with ``argv`` (default ``sys.argv[2:]``); on failure one line and status 1."""
    args = build_parser().parse_args(list(sys.argv[2:] if argv is None else argv))
    console = output_console()
    try:
        if args.command == "list":
            print_listing(args.tracking_uri, console)
            return
        registry = open_registry(args.tracking_uri or default_uri())
        if args.command == "register":
            info = registry.register(args.path, args.name, dict(args.metric), args.alias)
            console.print(
                f"Registered {info.label} ({_aliases(info)}) from {info.record.get('checkpoint')} in {registry.uri}"
            )
        elif args.command == "register-all":
            if _register_all(registry, Path(args.folder), args.name, args.alias, console):
                raise SystemExit(1)
        elif args.command == "compare":
            console.print(compare_table(registry.compare(args.refs), args.metrics))
        elif args.command == "promote":
            previous, current = registry.promote(args.name, args.version, args.to_alias)
            before = f"moved from version {previous.version}" if previous else "set (no version held it before)"
            console.print(f"{args.name}: {args.to_alias} {before} to version {current.version}")
        elif args.command == "load":
            module = registry.load(args.ref)
            info = registry.resolve(args.ref)
            params = sum(p.numel() for p in module.parameters())
            console.print(
                f"Loaded {args.ref} = {info.label}: {type(module).__name__}, {params:,} parameters, SHA-256 verified"
            )
        elif args.command == "download":
            info = registry.resolve(args.ref)
            package = registry.download(info.label, Path(args.dst) / f"{info.name}-v{info.version}")
            console.print(f"Downloaded {args.ref} = {info.label} to {package} (SHA-256 verified)")
        elif args.command == "predict":
            from harvest.serving.predict_folder import predict_folder

            summary = predict_folder(
                registry, args.ref, Path(args.images), args.output, args.coco, args.overlays, args.min_score,
                args.batch_size,
            )  # fmt: skip
            written = ", ".join(summary["written"]) or "standard output"
            output_console(stderr=True).print(
                f"Predicted {summary['images']} images with {summary['version']}: {written}"
            )
        elif args.command == "export":
            from functools import partial

            from harvest.serving.export import export_registered, summary_line
            from lightning_modules.ssl_export import NotFittedError, classifier_graph

            graph = partial(classifier_graph, head=args.head)
            try:
                content = export_registered(registry, args.ref, args.format, args.output, args.images, graph)
            except NotFittedError as err:  # one line naming the fix (--head cnn)
                raise RegistryError(str(err)) from None
            algorithm = f" ({content['algorithm']})" if content["algorithm"] else ""
            console.print(f"Exported {content['model']}{algorithm} to {args.output}: {summary_line(content)}")
            if not content["check"]["passed"]:
                raise SystemExit(1)
        elif args.command == "serve":
            from harvest.serving.server import serve

            raise SystemExit(serve(registry, args.ref, args.host, args.port, args.workers))
    except (RegistryError, InputError) as err:
        print(f"harvest registry {args.command}: {err}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main(sys.argv[1:])
