"""``harvest ssl fit``: the grocery pipeline's SSL engine on features from anywhere (``.npz`` files).

::

    harvest ssl fit --train train.npz --test test.npz --labeled-ratio 0.1
    harvest ssl fit --train train.npz --test test.npz --algorithm label_spreading --device cuda --output ls.pt

Each file holds ``features`` (``[n, d]``) and ``labels`` (``[n]`` class indices), as the seed
project saved them. Training rows labeled ``-1`` are unlabeled; or ``--labeled-ratio`` keeps a
seeded, stratified fraction of a fully labeled training file (the others are scored as the
"unlabeled" column). Features are L2-normalised as in the pipeline (``--no-normalize`` keeps them).
``--output`` writes the fitted predictors (tensors and parameters, loadable with
``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.table import Table

from datamodules.labeled_split import stratified_choice
from harvest.core.console import console as output_console
from lightning_modules.ssl_algorithms import ALGORITHMS, KERNELS, SSLParams, scores
from lightning_modules.ssl_state import FittedSSL

OUTPUT_FORMAT = "harvest-ssl-predictors/1"


def build_parser() -> argparse.ArgumentParser:
    """The ``harvest ssl`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="harvest ssl",
        description="Fit the SSL engine (label propagation, label spreading, self-training) on feature files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n", 2)[2],
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit on --train, print test accuracy and macro F1 per algorithm")
    fit.add_argument(
        "--train", required=True, type=Path, help=".npz with features [n, d] and labels [n] (-1: unlabeled)"
    )
    fit.add_argument("--test", required=True, type=Path, help=".npz with features [m, d] and labels [m]")
    fit.add_argument("--labeled-ratio", type=float, default=None, help="keep this stratified fraction of labels")
    fit.add_argument("--seed", type=int, default=42, help="seed of --labeled-ratio (default: %(default)s)")
    fit.add_argument(
        "--algorithm", action="append", choices=ALGORITHMS, default=None, help="repeatable (default: all three)"
    )
    fit.add_argument("--kernel", choices=KERNELS, default="knn", help="graph kernel (default: %(default)s)")
    fit.add_argument("--n-neighbors", type=int, default=7, help="neighbours of the knn kernel (default: %(default)s)")
    fit.add_argument("--gamma", type=float, default=20.0, help="width of the rbf kernel (default: %(default)s)")
    fit.add_argument("--alpha", type=float, default=0.2, help="clamping factor of spreading (default: %(default)s)")
    fit.add_argument("--max-iter", type=int, default=1000, help="graph iteration limit (default: %(default)s)")
    fit.add_argument("--threshold", type=float, default=0.75, help="self-training threshold (default: %(default)s)")
    fit.add_argument("--no-normalize", action="store_true", help="do not L2-normalise the features")
    fit.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default: %(default)s)")
    fit.add_argument("--output", type=Path, default=None, help="write the fitted predictors to this file")
    return parser


def load_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``features`` and ``labels`` of an ``.npz`` file, checked; one-line errors name the file and key."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give an .npz with arrays 'features' and 'labels'.")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as an .npz file ({err}); save it with numpy.savez.") from err
    missing = [key for key in ("features", "labels") if key not in arrays]
    if missing:
        raise ValueError(f"{path} has no array {missing[0]!r} (found {sorted(arrays)}); save features and labels.")
    features, labels = arrays["features"], arrays["labels"]
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
        raise ValueError(
            f"{path}: features {features.shape} and labels {labels.shape} must be [n, d] and [n] for the same n."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < -1:
        raise ValueError(f"{path}: labels must be class indices (integers >= 0, -1 for unlabeled).")
    if not np.isfinite(features).all():
        raise ValueError(f"{path}: features hold NaN or infinite values; clean them before fitting.")
    return features.astype(np.float32), labels.astype(np.int64)


def _targets(path: Path, labels: np.ndarray, ratio: float | None, seed: int) -> np.ndarray:
    if ratio is None:
        if not (labels >= 0).any():
            raise ValueError(f"{path}: every label is -1; label some rows or give --labeled-ratio.")
        return labels
    if (labels < 0).any():
        raise ValueError(f"{path} already marks unlabeled rows with -1: drop --labeled-ratio {ratio} or label them.")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"--labeled-ratio {ratio}: use a fraction in (0, 1].")
    return np.where(stratified_choice(labels, ratio, seed), labels, -1)


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {name}: no CUDA GPU is available here; use --device cpu.")
    return device


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``harvest ssl fit``; return the results per algorithm."""
    train_x, train_y = load_features(args.train)
    test_x, test_y = load_features(args.test)
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"{args.test}: features have {test_x.shape[1]} dimensions, {args.train} has {train_x.shape[1]}."
        )
    if (test_y < 0).any():
        raise ValueError(f"{args.test}: test labels must all be known (found -1).")
    targets = _targets(args.train, train_y, args.labeled_ratio, args.seed)
    params = SSLParams(args.kernel, args.n_neighbors, args.gamma, args.alpha, args.max_iter, args.threshold)
    params.check_size(len(train_x), where=f"training rows in {args.train}", key="--n-neighbors")
    device = _device(args.device)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    x, queries = (torch.from_numpy(a).to(device) for a in (train_x, test_x))
    if not args.no_normalize:
        x, queries = F.normalize(x, dim=1), F.normalize(queries, dim=1)
    names = list(dict.fromkeys(args.algorithm or ALGORITHMS))
    fitted = FittedSSL().to(device)
    info = fitted.fit(names, params, x, torch.from_numpy(targets).to(device), num_classes)
    hidden = targets < 0
    results = {}
    for name in names:
        result = scores(test_y, fitted.predict(name, queries, params).cpu().numpy())
        unlabeled = None
        if args.labeled_ratio is not None and hidden.any():
            predicted = fitted.training_labels(name).cpu().numpy()[hidden]
            unlabeled = float((predicted == train_y[hidden]).mean())
        results[name] = {
            "test_accuracy": result.accuracy,
            "f1_score": result.f1,
            "unlabeled_accuracy": unlabeled,
            "fit_seconds": info[name]["seconds"],
        }
    if "knn_graph" in info:
        output_console().print(f"kNN graph shared by the graph algorithms: {info['knn_graph']['seconds']:.2f} s")
    _print(results, args, len(train_x), int((targets >= 0).sum()), device)
    if args.output is not None:
        _write(args.output, fitted, params, names, num_classes, not args.no_normalize)
    return results


def _print(results: dict[str, Any], args: argparse.Namespace, n: int, labeled: int, device: torch.device) -> None:
    table = Table(title=f"SSL on {args.train.name}: {n} rows, {labeled} labeled; test {args.test.name} ({device})")
    table.add_column("algorithm")
    for column in ("test_accuracy", "f1_score", "unlabeled_accuracy", "fit_seconds"):
        table.add_column(column, justify="right")
    for name, row in results.items():
        cells = ["-" if v is None else f"{v:.4f}" if k != "fit_seconds" else f"{v:.2f}" for k, v in row.items()]
        table.add_row(name, *cells)
    output_console().print(table)


def _write(path: Path, fitted: FittedSSL, params: SSLParams, names: list[str], classes: int, normalize: bool) -> None:
    payload = {
        "format": OUTPUT_FORMAT,
        "state": {k: v.cpu() for k, v in fitted.state_dict().items()},
        "params": asdict(params),
        "algorithms": names,
        "num_classes": classes,
        "normalize_features": normalize,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)
    output_console().print(f"fitted predictors written to {path}", highlight=False)


def load_predictors(path: str | Path, map_location: str = "cpu") -> tuple[FittedSSL, SSLParams, dict[str, Any]]:
    """Read a file written by ``harvest ssl fit --output`` (``weights_only=True``): predictors, parameters, payload."""
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if payload.get("format") != OUTPUT_FORMAT:
        raise ValueError(f"{path} was not written by `harvest ssl fit --output` (format {payload.get('format')!r}).")
    fitted = FittedSSL()
    fitted.load_state_dict(payload["state"])
    return fitted, SSLParams(**payload["params"]), payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of ``harvest ssl``; returns the results of ``fit`` per algorithm."""
    args = build_parser().parse_args(argv)
    return fit(args)
