"""Which precision a run gets: autocast kept on a CUDA GPU and on CPUs that compute bf16 natively."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from toy_lightning import QUIET_ARGS, TOY_ARGS

from harvest.commands.main import cli_main
from harvest.core.precision import cpu_capabilities, cpu_computes_natively, resolve

BF16_CPU = {"avx512_bf16": True, "amx_bf16": False, "avx512_fp16": False, "amx_fp16": False}
AMX_CPU = {"avx512_bf16": False, "amx_bf16": True, "avx512_fp16": False, "amx_fp16": True}
PLAIN_CPU = {"avx2": True, "avx512_bf16": False, "amx_bf16": False}


def test_bf16_mixed_is_kept_on_a_cpu_with_native_bf16_and_on_cuda() -> None:
    for capabilities in (BF16_CPU, AMX_CPU):
        for accelerator in (None, "auto", "cpu"):
            assert resolve("bf16-mixed", accelerator, cuda=False, capabilities=capabilities) == ("bf16-mixed", None)
    assert resolve("bf16-mixed", "gpu", cuda=True, capabilities=PLAIN_CPU) == ("bf16-mixed", None)
    assert resolve("16-mixed", "auto", cuda=False, capabilities=AMX_CPU) == ("16-mixed", None)


def test_autocast_falls_back_to_32_true_where_the_cpu_would_emulate_it() -> None:
    precision, message = resolve("bf16-mixed", "auto", cuda=False, capabilities=PLAIN_CPU)
    assert precision == "32-true"
    assert message == (
        "precision=bf16-mixed needs a CUDA GPU or a CPU with AVX512-BF16 or AMX-BF16 and this machine has "
        "neither: running in 32-true instead."
    )
    # fp16 autocast needs fp16 instructions, which an AVX512-BF16 CPU lacks
    assert resolve(16, "cpu", cuda=False, capabilities=BF16_CPU)[0] == "32-true"
    assert "AVX512-FP16 or AMX-FP16" in resolve("16-mixed", None, cuda=False, capabilities=BF16_CPU)[1]
    # asking for a GPU that is not there: the CPU's bf16 is not what was asked for
    assert resolve("bf16-mixed", "gpu", cuda=False, capabilities=BF16_CPU)[0] == "32-true"


def test_true_precisions_and_other_accelerators_are_left_alone() -> None:
    for precision in ("32-true", "bf16-true", "64-true", None):
        assert resolve(precision, "auto", cuda=False, capabilities=PLAIN_CPU) == (precision, None)
    assert resolve("bf16-mixed", "mps", cuda=False, capabilities=PLAIN_CPU) == ("bf16-mixed", None)


def test_this_cpus_flags_are_read_from_torch() -> None:
    flags = cpu_capabilities()
    assert cpu_computes_natively("bf16") == bool(flags.get("avx512_bf16") or flags.get("amx_bf16"))
    expected = torch.cpu._is_avx512_bf16_supported() or bool(flags.get("amx_bf16"))  # torch's own probe
    assert cpu_computes_natively("bf16") == expected


@pytest.mark.skipif(
    torch.cuda.is_available() or not cpu_computes_natively("bf16"), reason="needs a CPU with native bf16"
)
def test_fit_from_the_cli_trains_in_bf16_mixed_on_this_cpu(in_tmp: Path) -> None:
    settings = ["--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "2"]
    cli = cli_main(["fit", *TOY_ARGS, *QUIET_ARGS, *settings, "--trainer.callbacks+", "TrainingSummary"])
    assert cli.trainer.precision == "bf16-mixed"
    assert cli.trainer.precision_plugin.__class__.__name__ == "MixedPrecision"
    (run_dir,) = Path("runs").iterdir()
    saved = (run_dir / "config.yaml").read_text()
    assert "precision: bf16-mixed" in saved
    assert json.loads((run_dir / "training_summary.json").read_text())["status"] == "completed"
