"""Harvest's ``fit`` step beside a bare PyTorch training step, interleaved step by step in one process.

The Harvest side is the recipe as the CLI builds it (``HarvestCLI``: the LightningModule, the data
module, the Trainer with the config's precision, callbacks and loggers). After every Harvest step a
callback runs one bare step in the style of torchvision's detection reference (``train_one_epoch``):
the next batch from its own iterator over the same training data, ``.to(device)``, the forward pass
under ``torch.autocast`` when the precision is mixed, the summed loss, ``loss.item()`` checked for
finiteness, ``zero_grad``/``backward``/gradient clipping when the config clips/``optimizer.step()``/
``lr_scheduler.step()``, on a copy of the module's network with an optimizer built by the module's own
optimizer factory. Both sides thus run the same model, data and precision, alternating, under the same
machine load. A Harvest step is timed from one ``on_train_batch_start`` to the next (data fetch, step,
loggers, every callback's batch hooks) less the bare step run in between; epoch ends (validation,
checkpoints) are left out on both sides.
"""

from __future__ import annotations

import copy
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import move_data_to_device
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harvest.lightning_cli.harvest_cli import HarvestCLI  # noqa: E402
from harvest.lightning_cli.run_setup import RUN_NAME_ENV  # noqa: E402

#: the two pipelines' CPU demos, as ``harvest fit`` composes them
DEMOS = {
    "groceries": ["configs/groceries_ssl.yaml", "configs/demo/groceries_cpu.yaml"],
    "fuji": ["configs/fuji_maskrcnn.yaml", "configs/demo/fuji_cpu.yaml"],
}


def bare_network(pl_module: pl.LightningModule) -> tuple[nn.Module, Callable[[nn.Module, Any], torch.Tensor]]:
    """A copy of the module's torch network and the loss its ``training_step`` computes on a batch."""
    if hasattr(pl_module, "model"):  # MaskRCNNModule: torchvision's loss dict, summed
        return copy.deepcopy(pl_module.model), lambda net, batch: sum(net(batch[0], batch[1]).values())
    network = nn.Sequential(copy.deepcopy(pl_module.encoder), copy.deepcopy(pl_module.head))
    return network, lambda net, batch: F.cross_entropy(net(batch[0]), batch[1])


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Sides:
    """Per side (``"harvest"``, ``"bare"``): wall and CPU seconds per step, images, peak CUDA memory.

    ``pairs`` holds (Harvest, bare) wall seconds of the same step: the two ran back to back, under
    the same load, so the median of their ratios is the steadiest figure on a shared machine.
    """

    seconds: dict[str, list[float]] = field(default_factory=lambda: {"harvest": [], "bare": []})
    cpu: dict[str, list[float]] = field(default_factory=lambda: {"harvest": [], "bare": []})
    images: dict[str, int] = field(default_factory=lambda: {"harvest": 0, "bare": 0})
    peak_bytes: dict[str, int] = field(default_factory=lambda: {"harvest": 0, "bare": 0})
    pairs: list[tuple[float, float]] = field(default_factory=list)


class BareStep:
    """One training step of a bare PyTorch loop, torchvision-reference style, on the Trainer's data."""

    def __init__(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.device = pl_module.device
        self.network, self.loss = bare_network(pl_module)
        self.network.train()
        params = [p for p in self.network.parameters() if p.requires_grad]
        self.optimizer = pl_module.optimizer(params)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: 1.0)
        self.clip = trainer.gradient_clip_val
        self.bf16 = str(trainer.precision).startswith("bf16")
        self.fp16 = str(trainer.precision).startswith("16")
        self._loader = trainer.datamodule.train_dataloader() if trainer.datamodule else trainer.train_dataloader
        self._batches: Iterator = iter(self._loader)

    def _next(self) -> Any:
        try:
            return next(self._batches)
        except StopIteration:
            self._batches = iter(self._loader)
            return next(self._batches)

    def __call__(self) -> int:
        """Run one step; the number of images it trained on."""
        batch = move_data_to_device(self._next(), self.device)
        dtype = torch.bfloat16 if self.bf16 else torch.float16
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.bf16 or self.fp16):
            loss = self.loss(self.network, batch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"bare loop: non-finite loss {loss.item()}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip:
            nn.utils.clip_grad_norm_(self.network.parameters(), float(self.clip))
        self.optimizer.step()
        self.scheduler.step()
        return len(batch[0])


class Interleaved(pl.Callback):
    """Runs a :class:`BareStep` after every Harvest step and times both sides (after ``warmup`` steps).

    Args:
        warmup: Steps of each side left untimed at the start.
        steps: Stop the fit after this many timed steps (default: run as configured).
        budget_s: Stop the fit once this many seconds have passed since its first step.
    """

    def __init__(self, warmup: int = 2, steps: int | None = None, budget_s: float | None = None) -> None:
        self.warmup, self.steps, self.budget_s = warmup, steps, budget_s
        self._started: float | None = None
        self.sides = Sides()
        self.bare: BareStep | None = None
        self._last: tuple[int, float, float] | None = None
        self._bare_seconds = self._bare_cpu = 0.0
        self._steps = 0
        self._images = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bare = BareStep(trainer, pl_module)

    def _peak(self, side: str, device: torch.device) -> None:
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            self.sides.peak_bytes[side] = max(self.sides.peak_bytes[side], peak)
            torch.cuda.reset_peak_memory_stats(device)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, idx: int) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if self._last is not None and self._last[0] == trainer.current_epoch and self._steps > self.warmup:
            harvest = now - self._last[1] - self._bare_seconds
            self.sides.seconds["harvest"].append(harvest)
            self.sides.cpu["harvest"].append(cpu - self._last[2] - self._bare_cpu)
            self.sides.pairs.append((harvest, self._bare_seconds))
            self.sides.images["harvest"] += self._images
        self._images = len(batch[0])
        self._last = (trainer.current_epoch, time.perf_counter(), time.process_time())

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        assert self.bare is not None
        sync(pl_module.device)
        self._peak("harvest", pl_module.device)
        started, cpu = time.perf_counter(), time.process_time()
        images = self.bare()
        sync(pl_module.device)
        self._bare_seconds, self._bare_cpu = time.perf_counter() - started, time.process_time() - cpu
        self._peak("bare", pl_module.device)
        self._steps += 1
        if self._steps > self.warmup:
            self.sides.seconds["bare"].append(self._bare_seconds)
            self.sides.cpu["bare"].append(self._bare_cpu)
            self.sides.images["bare"] += images
        self._started = self._started or started
        timed = self._steps - self.warmup
        over_budget = self.budget_s is not None and time.perf_counter() - self._started > self.budget_s
        if (self.steps is not None and timed > self.steps) or (over_budget and timed >= 2):
            trainer.should_stop = True  # this step is the last; the next Harvest interval completes it

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = None


def harvest_cli(configs: list[str], extra: list[str]) -> HarvestCLI:
    """The CLI's run of the composed configs (a fresh run name), instantiated but not started."""
    for name in (RUN_NAME_ENV, RUN_NAME_ENV + "_PID"):
        os.environ.pop(name, None)
    args = [arg for config in configs for arg in ("--config", str(REPO / config))]
    return HarvestCLI(args=[*args, *extra], run=False)


def interleaved_fit(
    cli: HarvestCLI, warmup: int = 2, steps: int | None = None, budget_s: float | None = None
) -> Sides:
    """Fit ``cli``'s model with a bare step after every Harvest step; both sides' measurements."""
    interleaved = Interleaved(warmup, steps, budget_s)
    cli.trainer.callbacks.append(interleaved)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return interleaved.sides


def trimmed_mean(values: list[float], cut: float = 0.1) -> float:
    """Mean without the slowest ``cut`` share (other jobs' bursts on a shared machine)."""
    kept = sorted(values)[: max(1, round(len(values) * (1 - cut)))]
    return sum(kept) / len(kept)


def paired_ratio(sides: Sides) -> float:
    """Median over steps of Harvest's step time over the bare step run right after it."""
    return statistics.median(harvest / bare for harvest, bare in sides.pairs) if sides.pairs else float("nan")


def images_per_second(sides: Sides, side: str) -> float:
    """Images per second of one side: images over the summed step times."""
    seconds = sum(sides.seconds[side])
    return sides.images[side] / seconds if seconds else float("nan")
