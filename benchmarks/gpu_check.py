"""One command for a lent GPU: every device measurement of Harvest, bounded to 8 minutes.

    benchmarks/gpu_check.sh                 # on one CUDA GPU: appends its block to benchmarks/RESULTS.md
    benchmarks/gpu_check.sh --dry-run       # the same steps at toy sizes on the CPU, in-process
    benchmarks/gpu_check.sh --dry-run --isolate --results /tmp/r.md   # dry run, one process per step

Steps (``benchmarks/gpu_check_steps.py``), each in its own process with a time limit (so an
out-of-memory error, a hang or a crash costs one step, reported in the block, and the rest go on):
synthetic data at the recipe's size; the largest Mask R-CNN training batch that fits, per precision;
Harvest's fit step beside a bare torchvision-reference loop on the Fuji recipe (ResNet-50 FPN v2,
1024 px) at batch 2 and at the largest batch, in bf16-mixed and 32-true; inference; the grocery
ResNet-50 fine-tune in bf16-mixed; one DataLoader worker at 1024 px; ``benchmarks/ssl_scale.py`` when
it exists; ``pytest -m gpu``. Prints a Markdown block naming the device and appends it to
``benchmarks/RESULTS.md`` (a dry run only to ``--results`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gpu_check_steps as steps
import torch
from fit_vs_bare import REPO

from harvest.core.errors import first_line

#: (step, time limit in seconds on the GPU); the limits add up to the 8 minutes with start-ups inside
PLAN: list[tuple[str, int]] = [
    ("data", 45),
    ("largest", 50),
    ("train:fuji:bf16-mixed:2", 30),
    ("train:fuji:32-true:2", 30),
    ("train:fuji:bf16-mixed:largest", 50),
    ("train:fuji:32-true:largest", 50),
    ("inference", 30),
    ("train:groceries:bf16-mixed:recipe", 40),
    ("loader", 25),
    ("ssl", 60),
    ("pytest", 40),
]
TOTAL_S = 470
STARTUP_S = 20  # a step's process start-up (imports, CUDA, model build) inside its limit
TEARDOWN_S = 15  # after measuring: one validation batch, checkpoints, the grocery SSL stage
DRY_SLACK = 4  # a dry run's limits are this many times longer: a shared CPU starts processes slowly
COLUMNS = ("measurement", "precision", "batch", "images/s", "bare loop images/s", "step time Harvest ÷ bare",
           "peak GPU memory (Harvest / bare)")  # fmt: skip


def run_step(name: str, ctx: steps.Context, dry: bool, largest: dict[str, int]) -> dict[str, Any]:
    """Run one step of :data:`PLAN` in this process; its rows and notes."""
    kind, *parts = name.split(":")
    if kind == "data":
        return steps.write_data(ctx)
    if kind == "largest":
        return steps.largest_batch(ctx)
    if kind == "train":
        pipeline, precision, batch = parts
        if batch == "largest" and precision not in largest:
            return {"rows": [], "notes": [f"{name}: skipped, no largest batch was found"]}
        ctx.batch = {"largest": largest.get(precision, 2), "recipe": ctx.sizes.grocery_batch}.get(batch) or int(batch)
        return steps.train(ctx, pipeline, precision)
    if kind == "inference":
        return steps.inference(ctx)
    if kind == "loader":
        return steps.loader(ctx)
    if kind == "ssl":
        return steps.ssl_scale(ctx, dry)
    if kind == "pytest":
        return steps.gpu_tests(ctx, dry)
    raise ValueError(f"unknown step {name!r}: use one of {[n for n, _ in PLAN]}")


def _in_process(name: str, ctx: steps.Context, dry: bool, largest: dict[str, int]) -> dict[str, Any]:
    try:
        return run_step(name, ctx, dry, largest)
    except Exception as error:  # noqa: BLE001 -- a failing step is reported and the check goes on
        return {"rows": [], "notes": [f"{name}: FAILED ({type(error).__name__}: {first_line(error)})"]}


def _isolated(name: str, ctx: steps.Context, dry: bool, limit: float) -> dict[str, Any]:
    """Run one step in its own process (own session, killed with its children past ``limit``)."""
    out = ctx.workspace / f"{name.replace(':', '_')}.json"
    command = [sys.executable, __file__, "--step", name, "--workspace", str(ctx.workspace),
               "--budget", str(ctx.budget_s), *(["--dry-run"] if dry else [])]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, cwd=REPO)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        return {"rows": [], "notes": [f"{name}: FAILED (stopped at its {limit:.0f} s limit)"]}
    if process.returncode or not out.exists():
        lines = [line for line in output.strip().splitlines() if line.strip()]
        return {"rows": [], "notes": [f"{name}: FAILED (exit {process.returncode}: {lines[-1] if lines else ''})"]}
    return json.loads(out.read_text())


def block(device: str, dry: bool, results: list[dict[str, Any]], seconds: float) -> str:
    """The Markdown block: a heading naming the device, one table, then the notes."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "GPU check dry run on the CPU (toy sizes)" if dry else "GPU check"
    lines = [f"## {title}: {device} (`benchmarks/gpu_check.sh`, {when}, torch {torch.__version__}, {seconds:.0f} s)",
             "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for result in results for row in result["rows"]]
    lines += ["", "Training steps run on batches decoded once (the DataLoader row measures loading on its own);",
              "both loops hold a model in memory, so a peak includes the other loop's weights and optimizer state.",
              ""]  # fmt: skip
    lines += [f"- {note}" if not note.startswith("```") and not note.startswith(" ") else note
              for result in results for note in result["notes"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def check(
    dry: bool, isolate: bool, workspace: Path, total_s: float, only: list[str] | None = None
) -> list[dict[str, Any]]:
    """Run the plan (the steps whose names start with one of ``only``) within ``total_s``.

    Returns:
        Every step's result; a failing step is a note in it, never the end of the check.
    """
    device = torch.device("cuda" if torch.cuda.is_available() and not dry else "cpu")
    sizes = steps.DRY if dry else steps.Sizes()
    started, results, largest = time.perf_counter(), [], {}
    for name, limit in PLAN:
        if only and not any(name.startswith(prefix) for prefix in only):
            continue
        limit *= DRY_SLACK if dry else 1
        left = total_s - (time.perf_counter() - started)
        if left < 10:
            results.append({"rows": [], "notes": [f"{name}: skipped, the {total_s:.0f} s of the check are spent"]})
            continue
        overhead = (10 if name in ("ssl", "pytest") else STARTUP_S + TEARDOWN_S) if isolate else 0
        budget = min(limit, left) - overhead  # what the step itself may spend measuring
        ctx = steps.Context(sizes, workspace, device, budget_s=max(5.0, budget))
        result = (
            _isolated(name, ctx, dry, min(limit, left)) if isolate else _in_process(name, ctx, dry, largest)
        )
        largest.update(result.get("largest", {}))
        results.append(result)
        took = time.perf_counter() - started
        print(f"{name}: done at {took:.0f} s", *result["notes"], sep="\n  ", file=sys.stderr, flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the check (or, with ``--step``, one step of it in this process); 0 unless it could not start."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="toy sizes on the CPU (in-process unless --isolate)")
    parser.add_argument("--isolate", action="store_true", help="one process per step in a dry run too")
    parser.add_argument("--results", type=Path, help="file to append the block to (default: benchmarks/RESULTS.md, "
                        "not in a dry run)")  # fmt: skip
    parser.add_argument("--total", type=float, help=f"seconds for all steps (default: {TOTAL_S}, dry run x{DRY_SLACK})")
    parser.add_argument("--only", nargs="+", help="run only the steps whose names start with these")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:  # one step in its own process: largest batches come from the "largest" step's file
        device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
        ctx = steps.Context(steps.DRY if args.dry_run else steps.Sizes(), args.workspace, device, args.budget)
        found = args.workspace / "largest.json"
        largest = json.loads(found.read_text()).get("largest", {}) if found.exists() else {}
        result = run_step(args.step, ctx, args.dry_run, largest)
        (args.workspace / f"{args.step.replace(':', '_')}.json").write_text(json.dumps(result))
        return 0
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here; run `benchmarks/gpu_check.sh --dry-run` on a CPU.", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="harvest_gpu_check_") as folder:
        total = args.total or TOTAL_S * (DRY_SLACK if args.dry_run else 1)
        results = check(args.dry_run, args.isolate or not args.dry_run, Path(folder), total, args.only)
    device = steps.device_name(torch.device("cpu" if args.dry_run else "cuda"))
    text = block(device, args.dry_run, results, time.perf_counter() - started)
    print(text)
    target = args.results or (None if args.dry_run else REPO / "benchmarks" / "RESULTS.md")
    if target is not None:
        with target.open("a") as results_file:
            results_file.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
