"""FixMatch fine-tuning against today's pipeline and raw-pixel label spreading, on a real image set.

The set is scikit-learn's handwritten digits (``sklearn.datasets.load_digits``: 1,797 real 8x8 scans
of 10 digits, shipped inside the scikit-learn package, so nothing is downloaded), written as PNGs in
the DS2GROCERIES layout (``train/`` and ``test/``, a seeded stratified 75/25 split; ``val/`` is held
out of ``train/`` by the data module), upscaled to ``--image-size`` pixels. Three runs on the same
split (10 % of the training images labeled, seed 42):

1. today's pipeline: ``harvest fit --config configs/groceries_ssl.yaml`` with a ResNet-18 from random
   weights fine-tuned on the labeled images, then the graph algorithms and self-training;
2. the option: the same with ``--config configs/ssl/fixmatch.yaml``;
3. scikit-learn's ``LabelSpreading`` (knn, the seed's parameters) on the raw 64 pixel values.

Printed side by side: each run's test accuracy per algorithm (the CNN head included), the best, and
its wall time.

Examples::

    python benchmarks/fixmatch_digits.py                     # 10 epochs, 32 px, one torch thread
    python benchmarks/fixmatch_digits.py --epochs 15 --image-size 64 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_digits(root: Path, image_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the digits as ``root/{train,test}/<digit>/<index>.png``; return the raw pixels by file stem."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, test = train_test_split(indices, test_size=0.25, stratify=digits.target, random_state=seed)
    for split, chosen in (("train", train), ("test", test)):
        for index in chosen:
            folder = root / split / str(digits.target[index])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[index] / 16.0 * 255).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((image_size, image_size), Image.BILINEAR)
            image.convert("RGB").save(folder / f"{index:04d}.png")
    return {f"{i:04d}": digits.data[i] for i in indices}


def raw_pixel_reference(root: Path, pixels: dict[str, np.ndarray], labeled_ratio: float, seed: int) -> float:
    """Test accuracy of scikit-learn's label spreading on raw pixels of the data module's own split."""
    from sklearn.semi_supervised import LabelSpreading

    from datamodules.groceries import GroceriesDataModule

    data = GroceriesDataModule(root=str(root), labeled_ratio=labeled_ratio, seed=seed, num_workers=0)
    data.setup("fit")
    x = np.stack([pixels[p.stem] for p, _ in data.samples["train"]])
    targets = data.ssl_targets()
    test_x = np.stack([pixels[p.stem] for p, _ in data.samples["test"]])
    test_y = np.array([label for _, label in data.samples["test"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LabelSpreading(kernel="knn", n_neighbors=7, alpha=0.2, max_iter=1000).fit(x, targets)
    return float((model.predict(test_x) == test_y).mean())


def fit(root: Path, name: str, epochs: int, image_size: int, labeled_ratio: float, extra: list[str]) -> dict:
    """One ``harvest fit`` of the grocery recipe on the digits; its test accuracies and wall time."""
    from harvest.commands.main import cli_main

    args = [
        "fit",
        f"--config={REPO / 'configs' / 'groceries_ssl.yaml'}",
        *extra,
        "--data.root", str(root), "--data.labeled_ratio", str(labeled_ratio), "--data.image_size", str(image_size),
        "--data.batch_size", "16", "--data.num_workers", "0",
        "--model.backbone", "resnet18", "--model.weights", "null", "--model.optimizer.init_args.lr", "0.001",
        "--trainer.max_epochs", str(epochs), "--trainer.logger", "false",
        "--run_name", name,
    ]  # fmt: skip
    started = time.perf_counter()
    cli = cli_main(args)
    seconds = time.perf_counter() - started
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.endswith("/test_accuracy")}
    return {"metrics": metrics, "best": max(metrics.values()), "seconds": seconds, "epochs": cli.trainer.current_epoch}


def main(argv: list[str] | None = None) -> None:
    """Run the three approaches and print their figures side by side."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--labeled-ratio", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--workdir", default=None, help="folder for the data and runs (default: a temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fixmatch-digits-"))
    root = workdir / "digits"
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    started = time.perf_counter()
    pixels = write_digits(root, args.image_size)
    reference = raw_pixel_reference(root, pixels, args.labeled_ratio, 42)
    today = fit(root, "today", args.epochs, args.image_size, args.labeled_ratio, [])
    option = fit(
        root,
        "fixmatch",
        args.epochs,
        args.image_size,
        args.labeled_ratio,
        [f"--config={REPO / 'configs/ssl/fixmatch.yaml'}"],
    )
    total = time.perf_counter() - started
    load = os.getloadavg()[0]
    print(f"\ndigits (load_digits, {args.image_size} px), {args.labeled_ratio:.0%} labeled, {args.epochs} epochs, "
          f"ResNet-18 from random weights, {args.threads} torch thread(s); load average {load:.1f}")  # fmt: skip
    rows = sorted({*today["metrics"], *option["metrics"]})
    print(f"{'test accuracy':<34} {'today':>8} {'fixmatch':>9}")
    for row in rows:
        print(
            f"{row:<34} {today['metrics'].get(row, float('nan')):8.4f} {option['metrics'].get(row, float('nan')):9.4f}"
        )
    print(f"{'best of the run':<34} {today['best']:8.4f} {option['best']:9.4f}")
    print(f"{'wall seconds':<34} {today['seconds']:8.1f} {option['seconds']:9.1f}")
    print(f"raw-pixel label spreading (scikit-learn): {reference:.4f}")
    print(f"option - today: {100 * (option['best'] - today['best']):+.1f} points; option - raw pixels: "
          f"{100 * (option['best'] - reference):+.1f} points; whole benchmark {total / 60:.1f} min")  # fmt: skip


if __name__ == "__main__":
    main()
