"""The measurements of ``benchmarks/gpu_check.py``, one small function each.

Every step takes a :class:`Context` and returns ``{"rows": [...], "notes": [...]}``: table rows of
``(measurement, precision, batch, images/s, bare loop images/s, Harvest ÷ bare step time, peak GPU
memory)`` and free lines. ``Sizes`` holds the real sizes (the Fuji recipe at 1024 pixels, the grocery
recipe's ResNet-50 at 224) and the toy sizes of ``--dry-run`` (the same steps on a CPU in seconds).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from fit_vs_bare import REPO, Sides, harvest_cli, interleaved_fit, trimmed_mean
from maskrcnn_throughput import detector_args, recipe, step
from torch.utils.data import DataLoader

from datamodules import FujiApplesDataModule
from datamodules.synthetic import SyntheticGroceries
from datamodules.synthetic_orchard import SyntheticOrchard
from lightning_modules.detection_models import build_mask_rcnn

FUJI = "configs/fuji_maskrcnn.yaml"
GROCERIES = "configs/groceries_ssl.yaml"


@dataclass(frozen=True)
class Sizes:
    """How big each step is: the recipes' real sizes, or toy sizes for a dry run on a CPU."""

    width: int = 1536  # synthetic orchard images, Fuji-SfM-like 3:2
    height: int = 1024
    pool: int = 8  # distinct training images, cycled into batches of any size
    steps: int = 12  # timed steps per side
    warmup: int = 3
    batches: tuple[int, ...] = (4, 8, 16, 32, 64)  # tried for the largest batch that fits
    fuji_extra: tuple[str, ...] = ()
    grocery_image: int = 224
    grocery_batch: int = 32
    grocery_extra: tuple[str, ...] = ()
    loader_images: int = 24


DRY = Sizes(
    width=96,
    height=64,
    pool=4,
    steps=2,
    warmup=1,
    batches=(4,),
    fuji_extra=(
        "--model.init_args.arch=resnet18",
        "--model.init_args.fpn_channels=64",
        "--model.init_args.anchor_sizes=[16,32,64,128,256]",
        "--data.init_args.min_size=64",
        "--data.init_args.max_size=96",
    ),
    grocery_image=32,
    grocery_batch=8,
    grocery_extra=("--model.init_args.backbone=resnet18",),
    loader_images=4,
)


@dataclass
class Context:
    """What a step needs: the sizes, a work folder shared by all steps, the device and a time budget."""

    sizes: Sizes
    workspace: Path
    device: torch.device
    budget_s: float = 60.0
    batch: int = 2

    @property
    def orchard(self) -> Path:
        """The synthetic orchard the Fuji steps read (written by :func:`write_data`)."""
        return self.workspace / "Fuji-SfM"

    @property
    def groceries(self) -> Path:
        """The synthetic grocery set the grocery step reads."""
        return self.workspace / "DS2GROCERIES"


def gib(value: int | None) -> str:
    """Bytes as GiB, or ``-`` where nothing was measured (no CUDA)."""
    return f"{value / 2**30:.2f} GiB" if value else "-"


def device_name(device: torch.device) -> str:
    """The device in words: GPU name and memory, or the CPU."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}"
    return f"CPU ({torch.get_num_threads()} threads)"


def write_data(ctx: Context) -> dict[str, Any]:
    """Write the synthetic orchard (recipe size) and grocery set every other step reads."""
    started = time.perf_counter()
    s = ctx.sizes
    SyntheticOrchard(s.pool, val_images=1, width=s.width, height=s.height, apple_radius=(0.02, 0.05)).write(
        ctx.orchard
    )
    SyntheticGroceries(6, s.pool, 2, 2, s.grocery_image, seed=0).write(ctx.groceries)
    took = time.perf_counter() - started
    return {"rows": [], "notes": [f"synthetic data: {s.pool} orchard images of {s.width}x{s.height} ({took:.0f} s)"]}


def _cached(cli: Any, batch: int, count: int) -> list:
    """``count`` training batches of ``batch`` samples cycled from the data module's own dataset.

    Decoding happens once, so the training steps measure the model and the framework, not the
    loader (which the ``loader`` step measures on its own). Lightning and the bare loop read this list.
    """
    module = cli.datamodule
    module.setup("fit")
    loader = module.train_dataloader()
    dataset, collate = loader.dataset, loader.collate_fn
    samples = [dataset[i] for i in range(len(dataset))]
    pool = itertools.cycle(samples)
    batches = [collate([next(pool) for _ in range(batch)]) for _ in range(count)]
    cached = DataLoader(batches, batch_size=None)  # yields the batches as they are; a list would not do:
    module.train_dataloader = lambda: cached  # Lightning would take a list for several loaders
    return batches


def _harvest_args(ctx: Context, precision: str, batch: int, data_root: Path, extra: tuple[str, ...]) -> list[str]:
    return [
        f"--trainer.precision={precision}",
        "--trainer.logger=false",
        "--trainer.devices=1",
        f"--trainer.max_steps={ctx.sizes.warmup + ctx.sizes.steps + 2}",
        "--trainer.limit_val_batches=1",  # one batch when the fit stops: early stopping needs its metric
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.default_root_dir={ctx.workspace / 'runs'}",
        "--model.init_args.weights=null",
        f"--data.init_args.root={data_root}",
        f"--data.init_args.batch_size={batch}",
        "--data.init_args.num_workers=0",
        *extra,
    ]


def _fit_row(name: str, precision: str, batch: int, sides: Sides) -> list[str]:
    harvest, bare = (trimmed_mean(sides.seconds[side]) for side in ("harvest", "bare"))
    peaks = f"{gib(sides.peak_bytes['harvest'])} / {gib(sides.peak_bytes['bare'])}"
    speeds = [f"{batch / harvest:.3g}", f"{batch / bare:.3g}", f"{harvest / bare:.3f}"]
    return [name, precision, str(batch), *speeds, peaks]


def train(ctx: Context, pipeline: str, precision: str) -> dict[str, Any]:
    """Harvest's fit step and a bare loop, interleaved, on cached batches of ``ctx.batch`` images."""
    s = ctx.sizes
    configs, root, extra = (
        ([FUJI], ctx.orchard, (*s.fuji_extra, "--data.init_args.test_fraction=0"))
        if pipeline == "fuji"
        else ([GROCERIES], ctx.groceries, (*s.grocery_extra, f"--data.init_args.image_size={s.grocery_image}"))
    )
    cli = harvest_cli(configs, _harvest_args(ctx, precision, ctx.batch, root, extra))
    _cached(cli, ctx.batch, s.warmup + s.steps + 2)
    sides = interleaved_fit(cli, s.warmup, s.steps, ctx.budget_s)
    name = "Mask R-CNN recipe training" if pipeline == "fuji" else "grocery ResNet fine-tune"
    ran = str(cli.trainer.precision)
    return {"rows": [_fit_row(name, ran, ctx.batch, sides)], "notes": [], "steps": len(sides.seconds["harvest"])}


def _detector(settings: dict[str, Any], device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_mask_rcnn(num_classes=2, **detector_args(settings)).to(device)


def _recipe_settings(ctx: Context) -> dict[str, Any]:
    settings = recipe([REPO / FUJI])
    for arg in ctx.sizes.fuji_extra:  # "--model.init_args.arch=resnet18" -> settings["model"]["arch"]
        key, value = arg.removeprefix("--").split("=", 1)
        section, _, name = key.split(".")
        settings[section][name] = yaml.safe_load(value)
    return settings


def _fuji_samples(ctx: Context, settings: dict[str, Any]) -> list:
    data = settings["data"]
    module = FujiApplesDataModule(
        ctx.orchard, num_workers=0, test_fraction=0, min_size=data["min_size"], max_size=data["max_size"]
    )
    module.setup("fit")
    return [module.datasets["train"][i] for i in range(len(module.datasets["train"]))]


def largest_batch(ctx: Context) -> dict[str, Any]:
    """Per precision, the largest batch of ``Sizes.batches`` whose training step (bare) fits in 80% of memory."""
    settings = _recipe_settings(ctx)
    samples = itertools.cycle(_fuji_samples(ctx, settings))
    total = torch.cuda.get_device_properties(ctx.device).total_memory if ctx.device.type == "cuda" else None
    rows, found = [], {}
    deadline = time.perf_counter() + ctx.budget_s
    for precision in ("bf16-mixed", "32-true"):
        model = _detector(settings, ctx.device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        found[precision], peak_found = 2, None
        for batch in ctx.sizes.batches:
            if time.perf_counter() > deadline:
                break
            chosen = [next(samples) for _ in range(batch)]
            batch_data = ([c[0] for c in chosen], [c[1] for c in chosen])
            try:
                if ctx.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(ctx.device)
                for _ in range(2):
                    step(model, optimizer, batch_data, ctx.device, precision == "bf16-mixed")
            except torch.OutOfMemoryError:
                break
            peak = torch.cuda.max_memory_allocated(ctx.device) if total else None
            if total and peak > 0.8 * total:
                break
            found[precision], peak_found = batch, peak
        rows.append(["largest batch that fits (bare step, <= 80% memory)", precision, str(found[precision]),
                     "-", "-", "-", gib(peak_found)])  # fmt: skip
        del model, optimizer
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()
    return {"rows": rows, "notes": [], "largest": found}


def inference(ctx: Context) -> dict[str, Any]:
    """Images/s of the recipe's detector in eval mode (no grad), batch ``ctx.batch``, per precision."""
    settings = _recipe_settings(ctx)
    samples = itertools.cycle(_fuji_samples(ctx, settings))
    model = _detector(settings, ctx.device).eval()
    rows = []
    for precision in ("bf16-mixed", "32-true"):
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        times = []
        for index in range(ctx.sizes.warmup + ctx.sizes.steps):
            chosen = [next(samples) for _ in range(ctx.batch)]
            seconds = step(model, None, ([c[0] for c in chosen], [c[1] for c in chosen]), ctx.device,
                           precision == "bf16-mixed")  # fmt: skip
            times += [seconds] if index >= ctx.sizes.warmup else []
        peak = torch.cuda.max_memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
        rows.append(["Mask R-CNN recipe inference", precision, str(ctx.batch),
                     f"{ctx.batch / trimmed_mean(times):.3g}", "-", "-", gib(peak)])  # fmt: skip
    return {"rows": rows, "notes": []}


def loader(ctx: Context) -> dict[str, Any]:
    """Images/s of one DataLoader worker producing the recipe's augmented training samples."""
    settings = _recipe_settings(ctx)
    data = settings["data"]
    module = FujiApplesDataModule(
        ctx.orchard, num_workers=1, test_fraction=0, batch_size=2, min_size=data["min_size"], max_size=data["max_size"]
    )
    module.setup("fit")
    batches = module.train_dataloader()
    images, started = 0, None
    deadline = time.perf_counter() + ctx.budget_s
    while images < ctx.sizes.loader_images and time.perf_counter() < deadline:
        for batch in batches:
            if started is None:
                started = time.perf_counter()  # from the first batch: the worker's start-up left out
                continue
            images += len(batch[0])
    rate = images / (time.perf_counter() - started) if images else float("nan")
    size = f"{data['min_size']}-pixel shorter side"
    return {"rows": [[f"DataLoader, 1 worker ({size}, augmented)", "-", "2", f"{rate:.3g}", "-", "-", "-"]],
            "notes": []}  # fmt: skip


def _tail(text: str, lines: int = 15) -> list[str]:
    return text.strip().splitlines()[-lines:]


def ssl_scale(ctx: Context, dry: bool) -> dict[str, Any]:
    """``benchmarks/ssl_scale.py --device cuda`` when that script exists (its ``--help`` in a dry run)."""
    script = REPO / "benchmarks" / "ssl_scale.py"
    if not script.exists():
        note = "SSL stage at 1M x 512: skipped, benchmarks/ssl_scale.py is not in this checkout"
        return {"rows": [], "notes": [note]}
    command = [sys.executable, str(script), *(["--help"] if dry else ["--device", ctx.device.type])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=ctx.budget_s, cwd=REPO, check=False)
    heading = f"SSL stage (`{' '.join(command[1:])}`, exit {done.returncode}):"
    return {"rows": [], "notes": [heading, "```", *_tail(done.stdout + done.stderr), "```"]}


def gpu_tests(ctx: Context, dry: bool) -> dict[str, Any]:
    """``pytest -m gpu`` (collected only in a dry run: without CUDA they skip)."""
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    command += ["--collect-only"] if dry else []
    done = subprocess.run(command, capture_output=True, text=True, timeout=ctx.budget_s, cwd=REPO, check=False)
    last = _tail(done.stdout + done.stderr, 1)
    return {"rows": [], "notes": [f"`{' '.join(command[2:])}`: exit {done.returncode}, {last[0] if last else ''}"]}
