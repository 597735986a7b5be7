"""``benchmarks/gpu_check.sh``: its dry run measures every step on the CPU and appends one block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_check_steps  # noqa: E402

from harvest.core.precision import cpu_computes_natively  # noqa: E402


def _rows(text: str) -> dict[tuple[str, str, str], list[str]]:
    """Table rows of the block by (measurement, precision, batch)."""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return {tuple(row[:3]): row[3:] for row in cells[1:]}


def _positive(value: str) -> bool:
    return float(value) > 0


def test_dry_run_measures_the_steps_and_appends_one_block(in_tmp: Path) -> None:
    results = in_tmp / "RESULTS.md"
    results.write_text("# Benchmark results\n")
    steps = ["data", "largest", "train:fuji:bf16-mixed:2", "inference", "loader", "ssl"]
    assert gpu_check.main(["--dry-run", "--only", *steps, "--results", str(results)]) == 0

    text = results.read_text()
    assert text.startswith("# Benchmark results\n\n## GPU check dry run on the CPU (toy sizes): CPU (")
    assert text.count("## GPU check") == 1
    rows = _rows(text)
    precision = "bf16-mixed" if cpu_computes_natively("bf16") else "32-true"
    images, bare, ratio, _ = rows[("Mask R-CNN recipe training", precision, "2")]
    assert _positive(images) and _positive(bare) and 0.2 < float(ratio) < 5
    for kind in ("bf16-mixed", "32-true"):
        assert rows[("largest batch that fits (bare step, <= 80% memory)", kind, "4")][0] == "-"
        assert _positive(rows[("Mask R-CNN recipe inference", kind, "2")][0])
    (loader,) = [row for key, row in rows.items() if key[0].startswith("DataLoader, 1 worker")]
    assert _positive(loader[0])
    assert "ssl_scale.py" in text and "FAILED" not in text


def test_a_failing_step_is_reported_and_the_check_goes_on(tmp_path: Path) -> None:
    # no data step: the loader has no orchard to read
    results = gpu_check.check(dry=True, isolate=False, workspace=tmp_path, total_s=120, only=["loader", "ssl"])
    notes = [note for result in results for note in result["notes"]]
    assert notes[0].startswith("loader: FAILED (") and str(tmp_path / "Fuji-SfM") in notes[0]
    assert "ssl_scale.py" in notes[1]


def test_a_step_past_its_limit_is_stopped(tmp_path: Path) -> None:
    ctx = gpu_check_steps.Context(gpu_check_steps.DRY, tmp_path, torch.device("cpu"))
    assert gpu_check._isolated("data", ctx, dry=True, limit=0.5) == {
        "rows": [],
        "notes": ["data: FAILED (stopped at its 0 s limit)"],
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a CUDA GPU the check runs")
def test_without_a_gpu_the_check_says_to_use_the_dry_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main([]) == 2
    assert capsys.readouterr().err == (
        "gpu_check: no CUDA GPU here; run `benchmarks/gpu_check.sh --dry-run` on a CPU.\n"
    )


@pytest.mark.slow
def test_the_shell_script_runs_every_step_in_its_own_process(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    command = ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--isolate", "--results", str(results)]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    text = results.read_text()
    assert text.strip() in done.stdout
    rows = _rows(text)
    trained = {key[1:] for key in rows if key[0] == "Mask R-CNN recipe training"}
    assert len(trained) == 4  # two precisions at batch 2 and at the largest batch
    assert any(key[0] == "grocery ResNet fine-tune" for key in rows)
    assert "`pytest -m gpu -q -p no:cacheprovider tests --collect-only`: exit 0" in text
    assert "FAILED" not in text
