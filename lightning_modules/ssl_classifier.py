"""SemiSupervisedClassifier: a CNN fine-tuned on labeled images, and SSL predictors fitted on its features."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules import ssl_algorithms as ssl
from lightning_modules.backbones import build_backbone
from lightning_modules.fixmatch import consistency_loss, ema_teacher
from lightning_modules.ssl_state import FittedSSL

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "ssl"


class SemiSupervisedClassifier(pl.LightningModule):
    """A torchvision backbone fine-tuned on the labeled images, and SSL predictors fitted on its features.

    ``fit`` fine-tunes the backbone with cross-entropy on the labeled training images (validation
    accuracy on ``val``). The SSL stage (``callbacks.SSLStage``, run after fine-tuning on the best
    weights) extracts features with :meth:`embed`, fits the algorithms with :meth:`fit_ssl` (label
    propagation, label spreading and self-training in torch, on the trainer's device) and scores
    them with :meth:`evaluate_ssl`; the best on validation accuracy is the default predictor. The
    fitted predictors are tensors in :attr:`ssl` (training features in half precision, label
    distributions, logistic-regression weights), saved by Lightning like any weight, so
    ``load_from_checkpoint(weights_only=True)`` gives a ready predictor.

    Args:
        num_classes: Number of classes (linked from the data module).
        class_names: Class names (linked from the data module).
        backbone: A torchvision classification model name (``resnet18``, ``resnet50``, ``efficientnet_b0``…).
        weights: Its pretrained weights (``IMAGENET1K_V2``, ``DEFAULT``…) or ``None`` for random init.
        algorithms: SSL algorithms to fit: ``label_propagation``, ``label_spreading``, ``self_training``.
        kernel: Graph kernel of label propagation / spreading: ``knn`` or ``rbf`` (dense; small sets only).
        n_neighbors: Neighbours of the ``knn`` kernel.
        gamma: Width of the ``rbf`` kernel.
        alpha: Clamping factor of label spreading.
        max_iter: Iteration limit of label propagation / spreading.
        self_training_threshold: Confidence above which self-training adopts a pseudo-label.
        normalize_features: L2-normalise features before the SSL algorithms.
        predict_algorithm: Algorithm used by ``predict`` (``cnn_head`` for the CNN's own classifier);
            ``None`` means the best on validation.
        unlabeled_weight: Weight of FixMatch's unsupervised loss, used when the data module gives
            unlabeled batches (``data.init_args.unlabeled_ratio > 0``, ``configs/ssl/fixmatch.yaml``).
        confidence_threshold: Confidence a pseudo-label needs (FixMatch: 0.95).
        ema_decay: Decay of an EMA teacher that makes the pseudo-labels; ``None``: the student makes them.
        optimizer: Optimizer of the fine-tuning.
        scheduler: Learning-rate scheduler of the fine-tuning (optional).

    """

    def __init__(
        self,
        num_classes: int,
        class_names: list[str] | None = None,
        backbone: str = "resnet50",
        weights: str | None = None,
        algorithms: list[str] = list(ssl.ALGORITHMS),  # noqa: B006 -- jsonargparse shows it as the default
        kernel: str = "knn",
        n_neighbors: int = 7,
        gamma: float = 20.0,
        alpha: float = 0.2,
        max_iter: int = 1000,
        self_training_threshold: float = 0.75,
        normalize_features: bool = True,
        predict_algorithm: str | None = None,
        unlabeled_weight: float = 1.0,
        confidence_threshold: float = 0.95,
        ema_decay: float | None = None,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"], logger=False)  # trackers get the config once
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.algorithms = ssl.check_algorithms(list(algorithms))
        if predict_algorithm not in (None, "cnn_head", *self.algorithms):
            raise ValueError(
                f"model.init_args.predict_algorithm={predict_algorithm!r}: "
                f"use null, cnn_head or one of {self.algorithms}."
            )
        try:
            self.params = ssl.SSLParams(kernel, n_neighbors, gamma, alpha, max_iter, self_training_threshold)
        except ValueError as error:
            raise ValueError(f"model.init_args.{error}") from None
        self.optimizer, self.scheduler = optimizer, scheduler
        self.encoder, width = build_backbone(backbone, weights)
        self.head = nn.Linear(width, num_classes)
        self.teacher = ema_teacher(nn.Sequential(self.encoder, self.head), ema_decay) if ema_decay else None
        self.ssl = FittedSSL()
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.ssl_results: dict[str, ssl.SSLResult] = {}  # test-split results per algorithm (confusion matrices)
        self.run_results: dict[str, Any] = {}

    # ------------------------------------------------------------------ network
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of the fine-tuned CNN."""
        return self.head(self.encoder(images))

    def ssl_features(self, raw: torch.Tensor) -> torch.Tensor:
        """Turn backbone output ``raw`` into what the SSL algorithms see (L2-normalised when configured)."""
        raw = raw.flatten(1).float()
        return F.normalize(raw, dim=1) if self.hparams.normalize_features else raw

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SSL features ``[B, d]`` (float32) and CNN-head logits of a batch of images."""
        raw = self.encoder(images)
        return self.ssl_features(raw), self.head(raw).float()

    def _step(self, batch: tuple, stage: str, accuracy: MulticlassAccuracy | None) -> torch.Tensor:
        images, labels, _ = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        size = len(labels)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True, sync_dist=True, batch_size=size)
        if accuracy is not None:
            accuracy(logits, labels)
            self.log(f"{stage}/accuracy", accuracy, prog_bar=True, on_epoch=True, on_step=False, batch_size=size)
        return loss

    def training_step(self, batch: tuple | dict[str, tuple], batch_idx: int) -> torch.Tensor:
        if isinstance(batch, dict):  # labeled and unlabeled batches side by side: FixMatch
            return self._fixmatch_step(batch["labeled"], batch["unlabeled"])
        return self._step(batch, "train", self.train_accuracy)

    def _fixmatch_step(self, labeled: tuple, unlabeled: tuple) -> torch.Tensor:
        images, labels, _ = labeled
        weak, strong, truth, _ = unlabeled  # truth: reported only, never part of the loss
        logits = self(torch.cat([images, weak, strong]))
        supervised_logits, weak_logits, strong_logits = logits.split([len(images), len(weak), len(strong)])
        if self.teacher is not None:
            with torch.no_grad():
                weak_logits = self.teacher.eval()(weak)
        supervised = F.cross_entropy(supervised_logits, labels)
        unsupervised, pseudo, mask = consistency_loss(weak_logits, strong_logits, self.hparams.confidence_threshold)
        loss = supervised + self.hparams.unlabeled_weight * unsupervised
        self.train_accuracy(supervised_logits, labels)
        values = {"loss": loss, "sup_loss": supervised, "unsup_loss": unsupervised, "mask_rate": mask.float().mean()}
        known = truth >= 0
        if bool(known.any()):
            values["unlabeled_accuracy"] = (pseudo == truth)[known].float().mean()
        if bool((mask & known).any()):
            values["pseudo_label_accuracy"] = (pseudo == truth)[mask & known].float().mean()
        for name, value in values.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", on_epoch=True, batch_size=len(weak))
        self.log("train/accuracy", self.train_accuracy, on_epoch=True, on_step=False, batch_size=len(images))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.teacher is not None:
            self.teacher.update_parameters(nn.Sequential(self.encoder, self.head))

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "val", self.val_accuracy)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "test", None)  # the SSL predictors are scored by the SSL stage

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer([p for p in self.parameters() if p.requires_grad])  # not the EMA teacher
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}

    # ------------------------------------------------------------------ SSL predictors
    def fit_ssl(self, features: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        """Fit every configured algorithm on training ``features`` (``targets`` ``-1`` when unlabeled)."""
        self.params.check_size(len(features))
        return self.ssl.fit(self.algorithms, self.params, features, targets, self.hparams.num_classes)

    def _scores(self, name: str, features: torch.Tensor, labels: torch.Tensor) -> ssl.SSLResult:
        predicted = self.ssl.predict(name, features, self.params)
        return ssl.scores(labels.cpu().numpy().astype(np.int64), predicted.cpu().numpy().astype(np.int64))

    def evaluate_ssl(
        self,
        val: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        test: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        unlabeled: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, float]:
        """Score the fitted predictors and the CNN head; keep the results; return the metrics.

        Args:
            val: Validation features, CNN-head predictions and labels.
            test: Test features, CNN-head predictions and labels.
            unlabeled: Mask of the unlabeled training images and their true labels (reported only).

        """
        fitted = self.ssl.fitted()
        val_results = {name: self._scores(name, val[0], val[2]) for name in fitted}
        test_results = {name: self._scores(name, test[0], test[2]) for name in fitted}
        hidden = {}
        if unlabeled is not None:  # the labels the algorithms gave the unlabeled training images
            mask, truth = unlabeled
            for name in fitted:
                predicted = self.ssl.training_labels(name)[mask]
                hidden[name] = ssl.scores(truth.cpu().numpy(), predicted.cpu().numpy())
        head = tuple(ssl.scores(y.cpu().numpy(), p.cpu().numpy()) for _, p, y in (val, test))
        metrics, self.run_results = ssl.summarize(
            val_results, test_results, hidden, head, self.hparams.predict_algorithm
        )
        self.ssl_results = {**test_results, "cnn_head": head[1]}  # the baseline's confusion matrix too
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.get("hyper_parameters")
        if hparams and hparams.get("weights"):
            # the trained weights are in the checkpoint: loading it must not fetch the initial ones
            hparams["weights"] = None
        if self.run_results:
            checkpoint[CHECKPOINT_KEY] = {"run_results": self.run_results}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY) or {}
        self.run_results = dict(stored.get("run_results") or {})
        state = checkpoint.get("state_dict", {})
        for name, buffer in self.ssl.state_dict(prefix="ssl.").items():
            state.setdefault(name, buffer.new_zeros(0))  # a checkpoint from before the SSL state existed

    # ------------------------------------------------------------------ prediction
    @torch.inference_mode()
    def classify(
        self, images: torch.Tensor, paths: list[str] | None = None, algorithm: str | None = None
    ) -> list[dict[str, Any]]:
        """Class name, confidence and probabilities of each image (call ``eval()`` first outside a Trainer).

        Args:
            images: Normalised images ``[B, 3, H, W]`` as the data module's evaluation transform makes them.
            paths: Where the images came from, copied into the results.
            algorithm: ``cnn_head`` or a fitted algorithm; default ``predict_algorithm``, else the best one.

        """
        algorithm = algorithm or self.hparams.predict_algorithm or self.run_results.get("best_algorithm")
        features, logits = self.embed(images.to(self.device))
        if algorithm == "cnn_head":
            probabilities = logits.softmax(1)
        else:
            probabilities = self.ssl.predict_proba(algorithm or "", features, self.params)
        return ssl.prediction_records(
            probabilities.float().cpu().numpy(), self.class_names, paths, algorithm or "cnn_head"
        )

    def predict_step(self, batch: tuple, batch_idx: int) -> list[dict[str, Any]]:
        images, _, paths = batch
        return self.classify(images, list(paths))
