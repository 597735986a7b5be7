"""Which precision a run gets on the machine it runs on.

The recipes ask for ``bf16-mixed``: on a CUDA GPU it runs as asked. On a CPU, bf16 autocast is fast
only where the CPU computes in bf16 natively (AVX512-BF16 or AMX-BF16; oneDNN then runs convolutions
and matrix products in bf16): there the real Mask R-CNN recipe trained 2.18x faster in bf16-mixed
than in 32-true (``benchmarks/RESULTS.md``). Elsewhere bf16 is emulated and slower than float32, and
fp16 autocast on a CPU without AVX512-FP16/AMX-FP16 likewise, so those fall back to ``32-true`` with
one line that says so. ``-true`` precisions are the user's explicit choice and stay as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

#: Lightning's names (and aliases) of the autocast precisions, by the dtype they compute in.
_MIXED = {"bf16-mixed": "bf16", "bf16": "bf16", "16-mixed": "fp16", "16": "fp16", 16: "fp16"}
#: Accelerator values for which this module decides; anything else (``mps``, ``tpu``…) is left alone.
_DECIDED_FOR = {"auto", "gpu", "cuda", "cpu"}


def cpu_capabilities() -> Mapping[str, object]:
    """This CPU's instruction-set flags as torch reads them (``avx512_bf16``, ``amx_bf16``…)."""
    return torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}


def cpu_computes_natively(kind: str, capabilities: Mapping[str, object] | None = None) -> bool:
    """Whether a CPU has instructions for ``kind`` ("bf16" or "fp16") that oneDNN uses.

    Args:
        kind: ``"bf16"`` (AVX512-BF16 or AMX-BF16) or ``"fp16"`` (AVX512-FP16 or AMX-FP16).
        capabilities: The CPU's flags (default: this CPU's, from :func:`cpu_capabilities`).

    Returns:
        True when autocast in that dtype runs on native instructions rather than emulated.
    """
    if capabilities is None:
        capabilities = cpu_capabilities()
    if kind == "bf16":
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return bool(capabilities.get("avx512_fp16") or capabilities.get("amx_fp16"))


def resolve(
    precision: str | int | None,
    accelerator: str | None,
    cuda: bool | None = None,
    capabilities: Mapping[str, object] | None = None,
) -> tuple[str | int | None, str | None]:
    """The precision to run with, and the one-line message when it differs from ``precision``.

    Args:
        precision: The configured ``trainer.precision``.
        accelerator: The configured ``trainer.accelerator`` (``None`` means ``auto``).
        cuda: Whether a CUDA GPU is available (default: ask torch).
        capabilities: The CPU's flags (default: this CPU's).

    Returns:
        ``(precision, None)`` when it runs as configured: on a CUDA GPU, on a CPU that computes the
        autocast dtype natively, or for any ``-true`` precision; else ``("32-true", message)``.
    """
    kind = _MIXED.get(precision) if isinstance(precision, (str, int)) else None
    if kind is None or str(accelerator or "auto") not in _DECIDED_FOR:
        return precision, None
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda or (str(accelerator or "auto") in {"auto", "cpu"} and cpu_computes_natively(kind, capabilities)):
        return precision, None
    native = "AVX512-BF16 or AMX-BF16" if kind == "bf16" else "AVX512-FP16 or AMX-FP16"
    return "32-true", (
        f"precision={precision} needs a CUDA GPU or a CPU with {native} and this machine has neither: "
        "running in 32-true instead."
    )
