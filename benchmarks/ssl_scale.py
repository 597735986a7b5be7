"""The SSL engine against scikit-learn at catalogue sizes, side by side in one run.

For each size ``NxD`` a clustered feature set (20 classes, L2-normalised, 10 % of the rows
labeled, as CNN features of a product catalogue look) and a test set of ``min(5000, N/10)`` rows
are drawn; each graph algorithm (the seed's knn kernel: ``n_neighbors=7``, ``alpha=0.2``,
``max_iter=1000``) is fitted and predicts the test set, by Harvest's torch engine on ``--device``
and by scikit-learn in a child process stopped after ``--sklearn-cap`` seconds. Printed per row:
the engine's seconds (kNN graph, iterations, test prediction), scikit-learn's seconds (or
``> cap``), the ratio and the share of identical test predictions.

Examples::

    python benchmarks/ssl_scale.py                                     # CPU: 5k, 20k, 100k x 512; 5k, 20k x 2048
    python benchmarks/ssl_scale.py --sizes 20000x2048 --sklearn-cap 600
    python benchmarks/ssl_scale.py --device cuda --sizes 1000000x512   # one GPU (no scikit-learn by default)
    python benchmarks/ssl_scale.py --device cuda --sizes 20000x2048 --sklearn-cap 600  # GPU beside CPU scikit-learn

Flags: ``--sizes NxD ...`` (default the CPU set above), ``--device cpu|cuda|cuda:N``,
``--algorithms label_spreading label_propagation``, ``--sklearn-cap SECONDS`` (0 skips
scikit-learn; default 300 on a CPU, 0 on a GPU), ``--threads N`` (torch and BLAS threads of both
sides; default: torch's), ``--seed``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES, LABELED, NEIGHBORS, ALPHA, MAX_ITER = 20, 0.1, 7, 0.2, 1000


def make_data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Clustered unit vectors: train features, train targets (-1 unlabeled), test features and labels."""
    rng = np.random.default_rng(seed)
    n_test = min(5000, n // 10)
    centres = rng.normal(0, 1, size=(CLASSES, d)).astype(np.float32)
    labels = rng.integers(0, CLASSES, n + n_test)
    x = centres[labels] + rng.normal(0, 1.6, size=(n + n_test, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    targets = np.where(rng.random(n) < LABELED, labels[:n], -1)
    return x[:n], targets, x[n:], labels[n:], labels[:n]


def run_torch(name: str, x: np.ndarray, targets: np.ndarray, test: np.ndarray, device: str) -> dict:
    """Harvest's engine: seconds per phase and the test predictions."""
    import torch

    from lightning_modules import graph_ssl

    def synced() -> float:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    variant = {"label_spreading": "spreading", "label_propagation": "propagation"}[name]
    features = torch.from_numpy(x).to(device)
    queries = torch.from_numpy(test).to(device)
    y = torch.from_numpy(targets).to(device)
    started = synced()
    neighbors = graph_ssl.knn_graph(features, NEIGHBORS)
    graph = synced()
    distributions, iterations, _ = graph_ssl.iterate(
        graph_ssl.knn_operator(neighbors, variant), y, CLASSES, variant, ALPHA, MAX_ITER
    )
    fitted = synced()
    base = features.half().float()  # what the checkpoint keeps
    predicted = graph_ssl.predict_proba(base, distributions.float(), queries, "knn", NEIGHBORS, 20.0).argmax(1)
    done = synced()
    return {
        "graph": graph - started,
        "iterations": fitted - graph,
        "n_iter": iterations,
        "predict": done - fitted,
        "total": done - started,
        "pred": predicted.cpu().numpy(),
    }


def _sklearn_child(
    name: str, x: np.ndarray, targets: np.ndarray, test: np.ndarray, queue: multiprocessing.Queue
) -> None:
    from sklearn.semi_supervised import LabelPropagation, LabelSpreading

    warnings.simplefilter("ignore")
    cls = LabelSpreading if name == "label_spreading" else LabelPropagation
    extra = {"alpha": ALPHA} if name == "label_spreading" else {}
    started = time.perf_counter()
    estimator = cls(kernel="knn", n_neighbors=NEIGHBORS, max_iter=MAX_ITER, **extra).fit(x, targets)
    predicted = estimator.predict(test)
    queue.put({"total": time.perf_counter() - started, "pred": predicted})


def run_sklearn(name: str, x: np.ndarray, targets: np.ndarray, test: np.ndarray, cap: float) -> dict | None:
    """scikit-learn in a child process; ``None`` when it has not finished after ``cap`` seconds."""
    if cap <= 0:
        return None
    context = multiprocessing.get_context("spawn")  # a forked child can deadlock in BLAS
    queue = context.Queue()
    child = context.Process(target=_sklearn_child, args=(name, x, targets, test, queue))
    child.start()
    try:
        return queue.get(timeout=cap)
    except Exception:  # queue.Empty: still running at the cap
        return None
    finally:
        if child.is_alive():
            child.kill()
        child.join()


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes", nargs="+", default=["5000x512", "20000x512", "100000x512", "5000x2048", "20000x2048"]
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--algorithms", nargs="+", default=["label_spreading", "label_propagation"])
    parser.add_argument(
        "--sklearn-cap",
        type=float,
        default=None,
        help="seconds before scikit-learn is stopped; 0 skips it (default: 300 on a CPU, 0 with --device cuda)",
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.sklearn_cap is None:
        args.sklearn_cap = 0.0 if args.device.startswith("cuda") else 300.0
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    where = torch.cuda.get_device_name(args.device) if cuda else f"CPU, {torch.get_num_threads()} torch threads"
    print(
        f"device: {where}; torch {torch.__version__}; scikit-learn capped at {args.sklearn_cap:.0f} s; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    names = ("size", "algorithm", "graph s", "iter s", "iters", "predict s", "torch s", "sklearn s", "ratio")
    names = (*names, "same pred", "acc torch", "acc sk")
    widths = (12, 18, 8, 7, 5, 9, 8, 10, 8, 9, 9, 7)
    print(" ".join(f"{c:>{w}}" for c, w in zip(names, widths, strict=True)))
    for size in args.sizes:
        n, d = (int(v) for v in size.lower().split("x"))
        x, targets, test, test_y, _ = make_data(n, d, args.seed)
        for name in args.algorithms:
            ours = run_torch(name, x, targets, test, args.device)
            theirs = run_sklearn(name, x, targets, test, args.sklearn_cap)
            sk = f"{theirs['total']:.1f}" if theirs else f"> {args.sklearn_cap:.0f}"
            ratio = (
                f"{theirs['total'] / ours['total']:.1f}x" if theirs else f"> {args.sklearn_cap / ours['total']:.1f}x"
            )
            same = f"{(theirs['pred'] == ours['pred']).mean():.4f}" if theirs else "-"
            acc_sk = f"{(theirs['pred'] == test_y).mean():.4f}" if theirs else "-"
            cells = (
                size, name, f"{ours['graph']:.1f}", f"{ours['iterations']:.2f}", ours["n_iter"],
                f"{ours['predict']:.2f}", f"{ours['total']:.1f}", sk, ratio, same,
                f"{(ours['pred'] == test_y).mean():.4f}", acc_sk,
            )  # fmt: skip
            print(" ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)), flush=True)


if __name__ == "__main__":
    main()
