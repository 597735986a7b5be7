"""``harvest ssl fit`` on feature files: the engine's table, the written predictors, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.semi_supervised import LabelSpreading

from harvest.commands.main import cli_main
from harvest.commands.ssl import load_predictors


def _write(path: Path, n: int, seed: int, hide: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(0, 1, size=(5, 32))
    labels = rng.integers(0, 5, n)
    features = (centres[labels] + rng.normal(0, 1.2, size=(n, 32))).astype(np.float32)
    stored = np.where(rng.random(n) < hide, -1, labels)
    np.savez(path, features=features, labels=stored)
    return features, labels


def test_fit_on_npz_prints_the_table_and_writes_predictors_that_reload(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path / "train.npz", 600, seed=1)
    test_x, test_y = _write(tmp_path / "test.npz", 200, seed=2)
    out = tmp_path / "fitted" / "ssl.pt"
    args = ["--train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz")]
    results = cli_main(["ssl", "fit", *args, "--labeled-ratio", "0.1", "--output", str(out)])
    printed = capsys.readouterr().out
    assert {"label_propagation", "label_spreading", "self_training"} == set(results)
    for name, row in results.items():
        assert name in printed and f"{row['test_accuracy']:.4f}" in printed and row["unlabeled_accuracy"] > 0.5

    fitted, params, payload = load_predictors(out)  # weights_only=True
    assert payload["algorithms"] == list(results) and fitted.features.dtype == torch.float16
    queries = F.normalize(torch.from_numpy(test_x), dim=1)
    for name, row in results.items():
        accuracy = (fitted.predict(name, queries, params).numpy() == test_y).mean()
        assert accuracy == pytest.approx(row["test_accuracy"])


def test_unlabeled_rows_marked_minus_one_and_one_algorithm(tmp_path: Path) -> None:
    train_x, _ = _write(tmp_path / "train.npz", 400, seed=3, hide=0.8)
    test_x, test_y = _write(tmp_path / "test.npz", 100, seed=4)
    args = ["--train", str(tmp_path / "train.npz"), "--test", str(tmp_path / "test.npz"), "--no-normalize"]
    results = cli_main(["ssl", "fit", *args, "--algorithm", "label_spreading", "--n-neighbors", "5"])
    assert list(results) == ["label_spreading"] and results["label_spreading"]["unlabeled_accuracy"] is None
    stored = np.load(tmp_path / "train.npz")["labels"]
    reference = LabelSpreading(kernel="knn", n_neighbors=5, alpha=0.2).fit(train_x, stored)
    expected = (reference.predict(test_x) == test_y).mean()
    assert abs(results["label_spreading"]["test_accuracy"] - expected) <= 0.005


def test_bad_feature_files_fail_in_one_line_naming_file_and_fix(tmp_path: Path) -> None:
    _write(tmp_path / "test.npz", 50, seed=5)
    np.savez(tmp_path / "nolabels.npz", features=np.zeros((10, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"nolabels\.npz has no array 'labels' \(found \['features'\]\)"):
        cli_main(["ssl", "fit", "--train", str(tmp_path / "nolabels.npz"), "--test", str(tmp_path / "test.npz")])
    _write(tmp_path / "hidden.npz", 50, seed=6, hide=0.5)
    with pytest.raises(ValueError, match=r"hidden\.npz already marks unlabeled rows with -1: drop --labeled-ratio"):
        cli_main(
            [
                "ssl",
                "fit",
                "--train",
                str(tmp_path / "hidden.npz"),
                "--test",
                str(tmp_path / "test.npz"),
                "--labeled-ratio",
                "0.2",
            ]
        )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "harvest",
            "ssl",
            "fit",
            "--train",
            str(tmp_path / "hidden.npz"),
            "--test",
            str(tmp_path / "test.npz"),
            "--n-neighbors",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("harvest: error: --n-neighbors=60 needs more than that many training rows in")
