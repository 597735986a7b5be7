"""Training and inference throughput of the Fuji Mask R-CNN recipe, bf16-mixed beside 32-true.

The model, image size, batch size, detector options and optimizer come from the recipe's YAML
(``configs/fuji_maskrcnn.yaml``, optionally composed with more configs); images are a synthetic orchard
written in the Fuji-SfM layout at the recipe's size and read by the real data module. Both precisions
run the same batches, alternating batch by batch; bf16-mixed is ``torch.autocast(bfloat16)`` around the
forward pass, as Lightning's ``bf16-mixed`` does. Prints images/second (from the median step time) and
the ratio to 32-true.

    python benchmarks/maskrcnn_throughput.py                      # the real recipe: 1024-pixel images
    python benchmarks/maskrcnn_throughput.py --small              # a CPU-sized setting
    python benchmarks/maskrcnn_throughput.py --steps 50 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from datamodules import FujiApplesDataModule
from datamodules.synthetic_orchard import SyntheticOrchard
from lightning_modules.detection_models import build_mask_rcnn

REPO = Path(__file__).resolve().parents[1]
#: the CPU-sized setting of --small: the demo's model on 384-pixel images
SMALL = {
    "arch": "resnet18",
    "fpn_channels": 64,
    "min_size": 384,
    "max_size": 512,
    "anchor_sizes": [16, 32, 64, 128, 256],
}


def recipe(configs: list[Path]) -> dict[str, Any]:
    """The model, data and optimizer settings of the composed configs (last wins, as on the CLI)."""
    merged: dict[str, Any] = {"model": {}, "data": {}, "optimizer": {}}
    for path in configs:
        config = yaml.safe_load(path.read_text())
        model = dict(config.get("model", {}).get("init_args", {}))
        merged["optimizer"].update(model.pop("optimizer", {}).get("init_args", {}))
        model.pop("scheduler", None)
        merged["model"].update(model)
        merged["data"].update(config.get("data", {}).get("init_args", {}))
    return merged


def detector_args(settings: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``build_mask_rcnn`` for the recipe's model (detector options included)."""
    model = settings["model"]
    args = {k: model.get(k) for k in ("arch", "anchor_sizes", "trainable_backbone_layers")}
    return {**args, "fpn_channels": model.get("fpn_channels", 256), **(model.get("detector_options") or {})}


def batches(settings: dict[str, Any], count: int, folder: Path) -> list[tuple[list, list]]:
    data = settings["data"]
    height = data["min_size"]
    width = min(data["max_size"], height * 3 // 2)
    images = count * data["batch_size"]
    orchard = SyntheticOrchard(images, val_images=1, width=width, height=height, apple_radius=(0.02, 0.05))
    sizes = {"min_size": data["min_size"], "max_size": data["max_size"], "batch_size": data["batch_size"]}
    module = FujiApplesDataModule(
        folder, synthetic=orchard, num_workers=0, test_fraction=0, scale_range=(1, 1), **sizes
    )
    module.setup("fit")
    return list(module.train_dataloader())


def step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    batch: tuple,
    device: torch.device,
    bf16: bool,
) -> float:
    """Seconds for one training step (``optimizer`` given) or one inference pass over ``batch``."""
    images = [i.to(device) for i in batch[0]]
    targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
    sync(device)
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        if optimizer is None:
            with torch.no_grad():
                model(images)
        else:
            loss = sum(model(images, targets).values())
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - started


def side_by_side(
    models: dict[str, torch.nn.Module], loader: list, device: torch.device, lr: float, warmup: int
) -> dict[str, tuple[float, float]]:
    """Per precision (training images/s, inference images/s), the precisions alternating batch by batch.

    Alternating keeps a machine whose load changes (a shared CPU) from favouring one precision; the
    median step time over the timed steps gives images per second.
    """
    optimizers = {
        name: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=0.9)
        for name, m in models.items()
    }
    times: dict[tuple[str, bool], list[float]] = {
        (name, train): [] for name in models for train in (True, False)
    }
    for train in (True, False):
        for model in models.values():
            model.train(train)
        for index, batch in enumerate(loader):
            for name, model in models.items():
                seconds = step(
                    model, optimizers[name] if train else None, batch, device, name == "bf16-mixed"
                )
                if index >= warmup:
                    times[(name, train)].append(seconds / len(batch[0]))
    return {
        name: (1 / statistics.median(times[(name, True)]), 1 / statistics.median(times[(name, False)]))
        for name in models
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, action="append", help="recipe configs (default: configs/fuji_maskrcnn.yaml)"
    )
    parser.add_argument("--small", action="store_true", help="a CPU-sized setting: " + str(SMALL))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    settings = recipe(args.config or [REPO / "configs" / "fuji_maskrcnn.yaml"])
    if args.small:
        settings["model"].update({k: v for k, v in SMALL.items() if k not in ("min_size", "max_size")})
        settings["data"].update(min_size=SMALL["min_size"], max_size=SMALL["max_size"])
    device = torch.device(args.device)
    model_args = detector_args(settings)
    with tempfile.TemporaryDirectory() as folder:
        loader = batches(settings, args.steps + args.warmup, Path(folder) / "Fuji-SfM")
    models = {}
    for precision in ("32-true", "bf16-mixed"):
        torch.manual_seed(0)
        models[precision] = build_mask_rcnn(num_classes=2, **model_args).to(device)
    measured = side_by_side(models, loader, device, settings["optimizer"].get("lr", 0.005), args.warmup)
    rows = [(precision, *measured[precision]) for precision in models]
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    image = loader[0][0][0].shape
    batch = settings["data"]["batch_size"]
    print(
        f"\n{model_args['arch']} (fpn {model_args['fpn_channels']}), images {image[2]}x{image[1]},"
        f" batch {batch},"
    )
    print(f"{args.steps} timed steps, {name}, torch {torch.__version__}\n")
    print("| precision | train images/s | ratio | inference images/s | ratio |")
    print("|---|---|---|---|---|")
    for precision, train, infer in rows:
        print(
            f"| {precision} | {train:.3g} | {train / rows[0][1]:.2f} | {infer:.3g} | "
            f"{infer / rows[0][2]:.2f} |"
        )


if __name__ == "__main__":
    main()
