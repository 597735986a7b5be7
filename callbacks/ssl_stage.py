"""The SSL stage of the grocery pipeline: after fine-tuning, fit the SSL predictors on the best weights' features.

The LightningModule computes (features, fitting, scores); this callback orchestrates: it checks the
graph's size before training starts, restores the best checkpoint's weights when fine-tuning ends,
extracts the features of every split once (batched, on the trainer's device, in the run's
precision), has the module fit and score its predictors on global rank zero, shares the results
with every rank, logs them, and writes the best checkpoint again through Lightning, now holding the
fitted predictors.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

Extracted = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # features, CNN-head predictions, labels


def log_outside_loop(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    """Send ``metrics`` to every logger and into ``trainer.callback_metrics`` (where ``self.log`` is not allowed).

    Loggers record the values at the current global step (they write on rank zero only), and callbacks
    reading ``trainer.callback_metrics`` (summaries, reports, trackers) see them. Call it with the same
    values on every rank.
    """
    values = {name: float(value) for name, value in metrics.items()}
    for logger in trainer.loggers:
        logger.log_metrics(values, step=trainer.global_step)
    trainer.callback_metrics.update({name: torch.tensor(value) for name, value in values.items()})


class SSLStage(Callback):
    """Fit and score the SSL predictors of a ``SemiSupervisedClassifier`` after ``fit``; score them in ``test``.

    ``fit``: before training, a ``knn`` graph larger than the training set is refused; at the end
    of training, the best checkpoint's weights are restored, features extracted, the predictors
    fitted and scored (``{algo}/test_accuracy``, ``{algo}/f1_score``, ``{algo}/val_accuracy``,
    ``summary/best_test_accuracy``, ``summary/val_accuracy``…), and the best checkpoint is written
    again with ``trainer.save_checkpoint`` (``last.ckpt`` too when it is the same step). ``test``:
    the checkpoint's predictors are scored again (fitted first when it has none). With
    ``fast_dev_run`` only that many batches of each split are extracted.

    List it after ``TrainingSummary``: its metrics are end-of-fit results, not the last epoch's.
    """

    def __init__(self) -> None:
        self._started = 0.0

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = self._datamodule(trainer)
        if not trainer.fast_dev_run:
            pl_module.params.check_size(len(datamodule.ssl_targets()))  # before any fine-tuning
        pl_module.ssl.clear()  # fitted on earlier features: stale once fine-tuning moves the weights
        self._started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fine_tune_seconds = time.perf_counter() - self._started
        best = self._restore_best_weights(trainer, pl_module)
        metrics = self._run(trainer, pl_module, fit=True)
        metrics["timing/fine_tune_seconds"] = fine_tune_seconds
        metrics["training/fine_tune_epochs"] = pl_module.current_epoch
        log_outside_loop(trainer, metrics)
        if best is not None:
            self._save(trainer, best)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit = not pl_module.ssl.fitted()
        if fit and trainer.is_global_zero:
            log.info("No fitted SSL predictors in this model or checkpoint: fitting them on its features now.")
        pl_module.log_dict(self._run(trainer, pl_module, fit=fit), sync_dist=True)  # equal on every rank

    # ------------------------------------------------------------------ stage
    @staticmethod
    def _datamodule(trainer: pl.Trainer) -> Any:
        datamodule = trainer.datamodule
        needed = ("all_train_dataloader", "ssl_targets", "train_true_labels", "val_dataloader", "test_dataloader")
        if not all(hasattr(datamodule, name) for name in needed):
            raise RuntimeError(
                "callbacks.SSLStage needs a data module with all_train_dataloader(), ssl_targets() and "
                "train_true_labels(), such as datamodules.GroceriesDataModule."
            )
        return datamodule

    @staticmethod
    @torch.inference_mode()
    def extract(trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Any, at_least: int = 0) -> Extracted:
        """Features, CNN-head predictions and labels of ``loader``'s images, in its order, on the module's device.

        With ``fast_dev_run`` only that many batches, or as many as hold more than ``at_least`` images.
        """
        limit = int(trainer.fast_dev_run) if trainer.fast_dev_run else None
        count = 0
        was_training = pl_module.training
        pl_module.eval()
        features, predictions, labels = [], [], []
        with trainer.precision_plugin.forward_context():
            for index, (images, targets, _) in enumerate(loader):
                if limit is not None and index >= limit and count > at_least:
                    break
                count += len(images)
                batch_features, logits = pl_module.embed(images.to(pl_module.device))
                features.append(batch_features.float())
                predictions.append(logits.argmax(1))
                labels.append(targets.to(pl_module.device))
        pl_module.train(was_training)
        return torch.cat(features), torch.cat(predictions), torch.cat(labels)

    def _evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fit: bool) -> dict[str, Any]:
        datamodule = self._datamodule(trainer)
        started = time.perf_counter()
        unlabeled = None
        if fit:
            loader = datamodule.all_train_dataloader()
            features, _, targets = self.extract(trainer, pl_module, loader, pl_module.params.n_neighbors)
            truth = torch.as_tensor(datamodule.train_true_labels()[: len(targets)], device=targets.device)
            fitted = time.perf_counter()
            pl_module.fit_ssl(features, targets)
            fit_seconds = time.perf_counter() - fitted
            hidden = targets < 0
            unlabeled = (hidden, truth[hidden]) if bool(hidden.any()) else None
        val = self.extract(trainer, pl_module, datamodule.val_dataloader())
        test = self.extract(trainer, pl_module, datamodule.test_dataloader())
        metrics = pl_module.evaluate_ssl(val, test, unlabeled)
        targets_all = datamodule.ssl_targets()
        metrics["dataset/train_samples"], metrics["dataset/test_samples"] = len(targets_all), len(test[2])
        metrics["data/labeled_samples"] = int((targets_all >= 0).sum())
        metrics["data/unlabeled_samples"] = int((targets_all < 0).sum())
        metrics["timing/ssl_seconds"] = time.perf_counter() - started
        if fit:
            metrics["timing/ssl_fit_seconds"] = fit_seconds
        return {
            "metrics": metrics,
            "run_results": pl_module.run_results,
            "ssl_results": pl_module.ssl_results,
            "state": {k: v.cpu() for k, v in pl_module.ssl.state_dict().items()},
        }

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule, fit: bool) -> dict[str, float]:
        """Run the stage on global rank zero and give every rank its results (and the fitted tensors)."""
        payload = self._evaluate(trainer, pl_module, fit) if trainer.is_global_zero else None
        payload = trainer.strategy.broadcast(payload)
        if not trainer.is_global_zero:
            pl_module.ssl.load_state_dict(payload["state"])
            pl_module.ssl.to(pl_module.device)
            pl_module.run_results, pl_module.ssl_results = payload["run_results"], payload["ssl_results"]
        return payload["metrics"]

    # ------------------------------------------------------------------ checkpoints
    @staticmethod
    def _restore_best_weights(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[Path, int] | None:
        """Load the weights of the best checkpoint of this fit; return its path and step (``None`` without one)."""
        path = Path(getattr(trainer.checkpoint_callback, "best_model_path", "") or "")
        if not path.is_file():
            return None
        checkpoint = torch.load(path, map_location=pl_module.device, weights_only=True)
        pl_module.load_state_dict(checkpoint["state_dict"])
        if trainer.is_global_zero:
            log.info("SSL stage on the fine-tuned weights of %s (epoch %s).", path, checkpoint.get("epoch"))
        return path, int(checkpoint.get("global_step", -1))

    @staticmethod
    def _save(trainer: pl.Trainer, best: tuple[Path, int]) -> None:
        """Write the best checkpoint again through Lightning, now with the fitted predictors.

        When the best weights are the last step's, the file is a full checkpoint (and ``last.ckpt``
        is written too); otherwise the optimizer and loop states of a later step would not match the
        weights, so it holds the weights only.
        """
        path, step = best
        same_step = step == trainer.global_step
        trainer.save_checkpoint(path, weights_only=not same_step)
        last = Path(getattr(trainer.checkpoint_callback, "last_model_path", "") or "")
        if same_step and last.is_file() and last != path:
            trainer.save_checkpoint(last, weights_only=False)
