"""FixMatch fine-tuning (``configs/ssl/fixmatch.yaml``): a fast_dev_run, no label leakage, EMA resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, groceries_args
from lightning.pytorch.utilities import CombinedLoader

from datamodules.groceries import GroceriesDataModule
from harvest.commands.main import cli_main
from lightning_modules.ssl_classifier import SemiSupervisedClassifier

FIXMATCH = f"--config={CONFIGS / 'ssl' / 'fixmatch.yaml'}"
LOGGED = ("train/sup_loss", "train/unsup_loss", "train/mask_rate", "train/unlabeled_accuracy")


def test_fast_dev_run_with_the_option_trains_on_unlabeled_batches(in_tmp: Path, tiny_groceries: Path) -> None:
    args = groceries_args(tiny_groceries, FIXMATCH, "--trainer.fast_dev_run", "2", "--trainer.logger", "false")
    cli = cli_main(["fit", *args, "--model.confidence_threshold", "0.0"])  # every pseudo-label counts
    loader = cli.datamodule.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    batch, _, _ = next(iter(loader))
    weak, strong, truth, _ = batch["unlabeled"]
    assert len(weak) == 3 * 8 and weak.shape == strong.shape and not torch.equal(weak, strong)
    summary = json.loads((Path(cli.trainer.default_root_dir) / "training_summary.json").read_text())
    metrics = summary["final_metrics"]
    assert set(LOGGED) <= set(metrics) and metrics["train/mask_rate"] == 1.0
    assert 0.0 <= metrics["train/pseudo_label_accuracy"] <= 1.0 and "label_spreading/test_accuracy" in metrics


def _batches(steps: int, leak: bool) -> list[dict]:
    """Labeled and unlabeled batches; the unlabeled images' true labels differ between the two calls."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(steps):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        labels = torch.randint(0, 3, (4,), generator=generator)
        weak = torch.randn(8, 3, 32, 32, generator=generator)
        strong = weak + 0.3 * torch.randn(8, 3, 32, 32, generator=generator)
        truth = torch.randint(0, 3, (8,), generator=generator)
        batches.append(
            {
                "labeled": (images, labels, ["l"] * 4),
                "unlabeled": (weak, strong, (truth + 1) % 3 if leak else truth, ["u"] * 8),
            }
        )
    return batches


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_unlabeled_true_labels_never_reach_the_weights(ema_decay: float | None) -> None:
    trained = []
    for other_truth in (False, True):
        torch.manual_seed(0)
        model = SemiSupervisedClassifier(
            num_classes=3, backbone="resnet18", confidence_threshold=0.0, ema_decay=ema_decay
        )
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
        model.train()
        for index, batch in enumerate(_batches(3, other_truth)):
            loss = model.training_step(batch, index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.on_train_batch_end(loss, batch, index)
        trained.append(model.state_dict())
    first, second = trained
    assert all(torch.equal(first[key], second[key]) for key in first)  # identical, whatever the true labels


def test_the_option_wires_data_and_model(tiny_groceries: Path) -> None:
    data = GroceriesDataModule(root=str(tiny_groceries), image_size=32, batch_size=4, num_workers=0, unlabeled_ratio=2)
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader, CombinedLoader) and set(loader.iterables) == {"labeled", "unlabeled"}
    unlabeled_paths = {p for p, keep in zip(data.samples["train"], data.labeled_mask, strict=True) if not keep}
    assert {Path(p) for p, _ in loader.iterables["unlabeled"].dataset.samples} == {p for p, _ in unlabeled_paths}
    with pytest.raises(ValueError, match="data.init_args.unlabeled_ratio=-1: use 0"):
        GroceriesDataModule(root=str(tiny_groceries), unlabeled_ratio=-1)


@pytest.mark.slow  # two fits with the SSL stage: about 40 s
def test_resume_restores_the_ema_teacher_and_its_step_counter(in_tmp: Path, tiny_groceries: Path) -> None:
    args = [
        *groceries_args(tiny_groceries, FIXMATCH, "--trainer.logger", "false", "--model.ema_decay", "0.9"),
        "--trainer.callbacks+", "ModelCheckpoint", "--trainer.callbacks.every_n_epochs", "1",
        "--trainer.callbacks.save_top_k", "-1", "--trainer.callbacks.filename", "epoch{epoch}",
    ]  # fmt: skip
    first = cli_main(["fit", *args, "--trainer.max_epochs", "1", "--run_name", "first"])
    (epoch_one,) = Path("runs/first/checkpoints").glob("epoch*.ckpt")
    saved = torch.load(epoch_one, weights_only=True)
    steps = saved["global_step"]
    assert steps > 0 and int(saved["state_dict"]["teacher.n_averaged"]) == steps
    assert first.model.teacher is not None

    resumed = cli_main(
        ["fit", *args, "--trainer.max_epochs", "2", "--run_name", "resumed", "--ckpt_path", str(epoch_one)]
    )
    (epoch_two,) = [p for p in Path("runs/resumed/checkpoints").glob("epoch*.ckpt") if "1" in p.stem.split("epoch")[-1]]
    final = torch.load(epoch_two, weights_only=True)
    # the teacher went on averaging from the restored one: its counter covers both epochs
    assert final["global_step"] == 2 * steps and int(final["state_dict"]["teacher.n_averaged"]) == 2 * steps
    assert resumed.trainer.global_step == 2 * steps
