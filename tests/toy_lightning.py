"""A toy DataModule and LightningModule for testing the CLI plumbing without a real pipeline."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class ToyData(pl.LightningDataModule):
    """Two Gaussian blobs in 4-D.

    Args:
        samples: Number of samples.
        batch_size: Batch size.
    """

    pipeline = "toy"

    def __init__(self, samples: int = 64, batch_size: int = 16) -> None:
        super().__init__()
        self.samples = samples
        self.batch_size = batch_size
        self.class_names = ["left", "right"]
        self.num_classes = 2

    def setup(self, stage: str | None = None) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(self.samples, 4, generator=generator)
        self.dataset = TensorDataset(x, (x[:, 0] > 0).long())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size)

    test_dataloader = predict_dataloader = val_dataloader


class ToyModel(pl.LightningModule):
    """A linear classifier.

    Args:
        num_classes: Number of classes (linked from the data module).
        class_names: Class names (linked from the data module).
        lr: SGD learning rate.
    """

    def __init__(self, num_classes: int = 2, class_names: list[str] | None = None, lr: float = 0.5) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(4, num_classes)

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, on_epoch=True, on_step=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        accuracy = (self.net(batch[0]).argmax(1) == batch[1]).float().mean()
        self.log("toy/test_accuracy", accuracy)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.net(batch[0]).argmax(1)

    def on_train_epoch_end(self) -> None:
        self.log("train/epoch_marker", float(self.current_epoch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


#: ``harvest`` arguments for the toy pipeline, shared by the tests that drive the CLI with it.
TOY_ARGS = ["--model", "toy_lightning.ToyModel", "--data", "toy_lightning.ToyData"]
QUIET_ARGS = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
CHECKPOINT_ARGS = [
    "--trainer.callbacks+", "ModelCheckpoint", "--trainer.callbacks.monitor", "val/loss",
    "--trainer.callbacks.save_last", "true",
]  # fmt: skip
