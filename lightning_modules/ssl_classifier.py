"""SemiSupervisedClassifier: fine-tune a CNN on labeled images, then fit SSL algorithms on its features."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics.classification import MulticlassAccuracy

from lightning_modules import ssl_algorithms as ssl
from lightning_modules.backbones import build_backbone
from lightning_modules.checkpoint_files import amend_checkpoints, checkpoint_paths
from lightning_modules.metric_logging import log_outside_loop

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "ssl"


class SemiSupervisedClassifier(pl.LightningModule):
    """A torchvision backbone fine-tuned on the labeled images, then label propagation & co. on its features.

    ``fit`` fine-tunes the backbone with cross-entropy on the labeled training images (validation
    accuracy on ``val``). At the end of ``fit`` the weights of the best checkpoint are restored (when
    a ``ModelCheckpoint`` wrote one), features of every training image and of the validation and
    test images are extracted, each algorithm is fitted on the training features (unlabeled images
    carry ``-1``) and evaluated; the best one on validation accuracy is the default predictor. The
    fitted estimators are written into that checkpoint (skops bytes in ``uint8`` tensors, loadable
    with ``weights_only=True``), so ``load_from_checkpoint`` gives a ready predictor. ``test`` uses
    the checkpoint's estimators (or fits them when it has none) and evaluates them again.

    The scikit-learn stage runs on global rank zero, on the trainer's device and precision, and its
    results are broadcast to the other ranks: exact under DDP (no sampler padding), at the cost of
    the other ranks waiting for it.

    Args:
        num_classes: Number of classes (linked from the data module).
        class_names: Class names (linked from the data module).
        backbone: A torchvision classification model name (``resnet18``, ``resnet50``, ``efficientnet_b0``…).
        weights: Its pretrained weights (``IMAGENET1K_V2``, ``DEFAULT``…) or ``None`` for random init.
        algorithms: SSL algorithms to fit: ``label_propagation``, ``label_spreading``, ``self_training``.
        kernel: Graph kernel of label propagation / spreading: ``knn`` or ``rbf``.
        n_neighbors: Neighbours of the ``knn`` kernel.
        gamma: Width of the ``rbf`` kernel.
        alpha: Clamping factor of label spreading.
        max_iter: Iteration limit of label propagation / spreading.
        self_training_threshold: Confidence above which self-training adopts a pseudo-label.
        normalize_features: L2-normalise features before the SSL algorithms.
        predict_algorithm: Algorithm used by ``predict`` (``cnn_head`` for the CNN's own classifier);
            ``None`` means the best on validation.
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
        optimizer: OptimizerCallable = torch.optim.AdamW,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.algorithms = ssl.check_algorithms(list(algorithms))
        if predict_algorithm not in (None, "cnn_head", *self.algorithms):
            raise ValueError(
                f"model.init_args.predict_algorithm={predict_algorithm!r}: "
                f"use null, cnn_head or one of {self.algorithms}."
            )
        self.params = ssl.SSLParams(kernel, n_neighbors, gamma, alpha, max_iter, self_training_threshold)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.encoder, width = build_backbone(backbone, weights)
        self.head = nn.Linear(width, num_classes)
        self.train_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.val_accuracy = MulticlassAccuracy(num_classes, average="micro")
        self.estimators: dict[str, Any] = {}
        self.ssl_results: dict[str, ssl.SSLResult] = {}
        self.run_results: dict[str, Any] = {}
        self._fit_started = 0.0
        self._serialized: tuple[dict[str, Any] | None, dict[str, torch.Tensor]] = (None, {})

    # ------------------------------------------------------------------ network
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits of the fine-tuned CNN."""
        return self.head(self.encoder(images))

    def ssl_features(self, raw: torch.Tensor) -> torch.Tensor:
        """Turn backbone output ``raw`` into what the SSL algorithms see (L2-normalised when configured)."""
        raw = raw.flatten(1).float()
        return F.normalize(raw, dim=1) if self.hparams.normalize_features else raw

    def _step(self, batch: tuple, stage: str, accuracy: MulticlassAccuracy | None) -> torch.Tensor:
        images, labels, _ = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        size = len(labels)
        self.log(
            f"{stage}/loss", loss, prog_bar=stage != "test", on_epoch=True, sync_dist=True, batch_size=size
        )
        if accuracy is not None:
            accuracy(logits, labels)
            self.log(
                f"{stage}/accuracy", accuracy, prog_bar=True, on_epoch=True, on_step=False, batch_size=size
            )
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_accuracy)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "val", self.val_accuracy)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step(batch, "test", None)  # the SSL evaluation runs once, in on_test_epoch_end

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}

    # ------------------------------------------------------------------ SSL stage
    @torch.inference_mode()
    def extract(self, loader: DataLoader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SSL features, CNN-head predictions and targets of every image of ``loader``, in its order."""
        was_training = self.training
        self.eval()
        context = self._trainer.precision_plugin.forward_context() if self._trainer else nullcontext()
        features, predictions, targets = [], [], []
        with context:
            for images, labels, _ in loader:
                raw = self.encoder(images.to(self.device))
                predictions.append(self.head(raw).argmax(1).cpu())
                features.append(self.ssl_features(raw).cpu())
                targets.append(labels)
        self.train(was_training)
        return torch.cat(features).numpy(), torch.cat(predictions).numpy(), torch.cat(targets).numpy()

    def _ssl_inputs(self) -> Any:
        datamodule = self.trainer.datamodule
        if not all(
            hasattr(datamodule, name) for name in ("all_train_dataloader", "ssl_targets", "train_true_labels")
        ):
            raise RuntimeError(
                "SemiSupervisedClassifier needs a data module with all_train_dataloader(), ssl_targets() and "
                "train_true_labels(), such as datamodules.GroceriesDataModule."
            )
        return datamodule

    def _evaluate_ssl(
        self, fit: bool
    ) -> tuple[dict[str, float], dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Extract features, fit the algorithms when ``fit``, evaluate them (on one process).

        Returns:
            Metrics, run results, test results per algorithm and of ``cnn_head``, and the estimators.

        """
        datamodule = self._ssl_inputs()
        started = time.perf_counter()
        unlabeled: dict[str, ssl.SSLResult] = {}
        if fit:
            train_x, _, targets = self.extract(datamodule.all_train_dataloader())
            self.estimators = ssl.fit_estimators(self.algorithms, self.params, train_x, targets)
            hidden, truth = targets == -1, datamodule.train_true_labels()
            unlabeled = {
                n: ssl.evaluate(e, train_x[hidden], truth[hidden])
                for n, e in self.estimators.items()
                if hidden.any()
            }
        val_x, _, val_y = self.extract(datamodule.val_dataloader())
        test_x, head_pred, test_y = self.extract(datamodule.test_dataloader())
        val = {name: ssl.evaluate(estimator, val_x, val_y) for name, estimator in self.estimators.items()}
        test = {name: ssl.evaluate(estimator, test_x, test_y) for name, estimator in self.estimators.items()}
        head = ssl.scores(test_y, head_pred)
        metrics, run_results = ssl.summarize(val, test, unlabeled, head)
        targets = datamodule.ssl_targets()
        metrics["dataset/train_samples"], metrics["dataset/test_samples"] = len(targets), len(test_y)
        metrics["data/labeled_samples"] = int((targets >= 0).sum())
        metrics["data/unlabeled_samples"] = int((targets < 0).sum())
        metrics["timing/ssl_seconds"] = time.perf_counter() - started
        return metrics, run_results, {**test, "cnn_head": head}, self.estimators

    def _ssl_stage(self, fit: bool) -> dict[str, float]:
        """Run :meth:`_evaluate_ssl` on global rank zero and share its results with every rank."""
        payload = self._evaluate_ssl(fit) if self.trainer.is_global_zero else None
        metrics, self.run_results, self.ssl_results, self.estimators = self.trainer.strategy.broadcast(
            payload
        )
        return metrics

    def on_train_start(self) -> None:
        self.estimators = {}  # fitted on earlier features: stale once fine-tuning moves the weights
        self._fit_started = time.perf_counter()

    def on_train_end(self) -> None:
        fine_tune_seconds = time.perf_counter() - self._fit_started
        checkpoint = self._restore_best_weights()
        metrics = self._ssl_stage(fit=True)
        metrics["timing/fine_tune_seconds"] = fine_tune_seconds
        metrics["training/fine_tune_epochs"] = self.current_epoch
        log_outside_loop(self.trainer, metrics)
        if checkpoint is not None:
            self._store_estimators(checkpoint)

    def on_test_epoch_end(self) -> None:
        if not self.estimators and self.trainer.is_global_zero:
            log.info(
                "No fitted SSL estimators in this model or checkpoint: fitting them on its features now."
            )
        self.log_dict(self._ssl_stage(fit=not self.estimators), sync_dist=True)  # equal on every rank

    # ------------------------------------------------------------------ checkpoints
    def _restore_best_weights(self) -> Path | None:
        """Load the weights of the best checkpoint of this fit; return its path (``None`` without one)."""
        best, _ = checkpoint_paths(self.trainer)
        if best is not None:
            checkpoint = torch.load(best, map_location=self.device, weights_only=True)
            self.load_state_dict(checkpoint["state_dict"])
            if self.trainer.is_global_zero:
                log.info(
                    "SSL stage on the fine-tuned weights of %s (epoch %s).", best, checkpoint.get("epoch")
                )
        return best

    def _store_estimators(self, best: Path) -> None:
        """Add the fitted estimators to their checkpoint (and to last.ckpt when it is the same step)."""
        if self.trainer.is_global_zero:
            _, last = checkpoint_paths(self.trainer)
            amend_checkpoints([best, *([last] if last else [])], self.on_save_checkpoint)
        self.trainer.strategy.barrier()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.get("hyper_parameters")
        if hparams and hparams.get("weights"):
            # the trained weights are in the checkpoint: loading it must not fetch the initial ones
            hparams["weights"] = None
        if self.estimators:
            if self._serialized[0] is not self.estimators:  # skops is slow: once per set of fitted estimators
                self._serialized = (
                    self.estimators,
                    {name: ssl.to_tensor(e) for name, e in self.estimators.items()},
                )
            checkpoint[CHECKPOINT_KEY] = {"estimators": self._serialized[1], "run_results": self.run_results}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(CHECKPOINT_KEY)
        if stored:
            self.estimators = {
                name: ssl.from_tensor(data, name) for name, data in stored["estimators"].items()
            }
            self.run_results = dict(stored["run_results"])

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
        raw = self.encoder(images.to(self.device))
        if algorithm == "cnn_head":
            probabilities = self.head(raw).float().softmax(1).cpu().numpy()
        elif algorithm in self.estimators:
            probabilities = ssl.predict_proba(
                self.estimators[algorithm], self.ssl_features(raw).cpu().numpy(), self.hparams.num_classes
            )
        else:
            raise RuntimeError(
                f"no fitted SSL estimator {algorithm!r}: fit first, "
                "load a checkpoint written at the end of fit, "
                "or set model.init_args.predict_algorithm: cnn_head."
            )
        return ssl.prediction_records(probabilities, self.class_names, paths, algorithm)

    def predict_step(self, batch: tuple, batch_idx: int) -> list[dict[str, Any]]:
        images, _, paths = batch
        return self.classify(images, list(paths))
