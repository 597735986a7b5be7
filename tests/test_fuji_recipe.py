"""The original project's Fuji recipe as a config, and a fit on its data layout from ``--data.root`` alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import CONFIGS, fuji_args
from lightning.pytorch.callbacks import EarlyStopping

from datamodules import FujiApplesDataModule
from harvest.commands.main import cli_main
from harvest.lightning_cli.harvest_cli import HarvestCLI
from lightning_modules.schedules import WarmupCosineLR


def original_layout(orchard: Path, root: Path) -> Path:
    """The synthetic orchard rewritten as the original project kept its data: COCO in trainingset/ + testset/."""
    splits = FujiApplesDataModule(root=orchard, val_fraction=0, test_fraction=0).splits()
    for folder, split in (("trainingset", "train"), ("testset", "val")):
        images, annotations = [], []
        (root / folder / "JPEGImages").mkdir(parents=True)
        for image_id, sample in enumerate(splits[split], 1):
            shutil.copy(sample.image, root / folder / "JPEGImages" / sample.image.name)
            size = {"width": sample.width, "height": sample.height}
            images.append({"id": image_id, "file_name": sample.image.name, **size})
            for instance in sample.instances:
                ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0}
                annotations.append({**ann, "segmentation": instance.segmentation})
        data = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "apple"}]}
        (root / folder / "annotations.json").write_text(json.dumps(data))
    return root


def test_the_original_recipe_config(in_tmp: Path, tiny_orchard: Path) -> None:
    root = original_layout(tiny_orchard, in_tmp / "fuji")
    args = ["--config", str(CONFIGS / "fuji_original.yaml"), "--data.root", str(root)]
    cli = HarvestCLI(args=[*args, "--model.init_args.weights", "null", "--trainer.logger", "false"], run=False)
    model, trainer, data = cli.model, cli.trainer, cli.datamodule
    assert trainer.max_epochs == 20 and data.batch_size == 2 and model.hparams.weights is None
    assert model.lr_multipliers == {"backbone": 1.0, "rpn": 5.0, "box_head": 10.0, "mask_head": 10.0, "rest": 1.0}
    (stopping,) = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
    assert stopping.patience == 10 and stopping.monitor == "val_segm/mAP"
    assert yaml.safe_load((CONFIGS / "fuji_original.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"
    optimizer = model.optimizer([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_mult": 1.0}])
    assert isinstance(optimizer, torch.optim.SGD)
    assert {k: optimizer.defaults[k] for k in ("lr", "momentum", "weight_decay")} == {
        "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4
    }  # fmt: skip
    schedule = model.scheduler(optimizer, total_steps=200)  # 20 epochs of 10 steps
    assert isinstance(schedule, WarmupCosineLR) and schedule.warmup_steps == 10  # one epoch
    factors = [schedule.factor(step) for step in (0, 5, 10, 100, 199)]
    assert factors[0] == pytest.approx(1e-3) and factors[1] < 1 and factors[2:] == [1.0, 1.0, 1.0]  # then constant
    assert data.layout().name == "original project"


def test_a_fuji_fit_on_the_original_layout_from_the_root_alone(in_tmp: Path, tiny_orchard: Path) -> None:
    root = original_layout(tiny_orchard, in_tmp / "fuji")
    extra = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--run_name", "original"]
    cli_main(["fit", *fuji_args(root, *extra, "--trainer.logger", "false")])
    run_dir = in_tmp / "runs" / "original"
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and "val_segm/mAP" in summary["final_metrics"]
    card = json.loads((run_dir / "dataset_card.json").read_text())
    assert card["layout"] == "original project" and card["format"] == "coco"
    assert card["sources"]["val"] == {"annotations": "testset/annotations.json", "images": "testset/JPEGImages"}
    assert card["splits"]["val"]["images"] == card["splits"]["test"]["images"] == 3
