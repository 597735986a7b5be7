#!/usr/bin/env bash
# One command for a lent GPU (at most 8 minutes on one H100/H200): Harvest's device measurements,
# printed and appended to benchmarks/RESULTS.md with the device named. See benchmarks/gpu_check.py.
#
#   benchmarks/gpu_check.sh              # on a CUDA GPU
#   benchmarks/gpu_check.sh --dry-run    # the same steps at toy sizes on the CPU
#
# PYTHON picks the interpreter (default: python3 on PATH); the repository root goes on PYTHONPATH.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
