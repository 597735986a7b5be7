"""Confusion matrices of the module's evaluated classifiers: counts, per-class scores, a figure, every logger."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from callbacks.logger_media import log_artifact_file, log_image_file
from harvest.runs.directory import write_json_atomic
from harvest.tracking.context import run_dir

log = logging.getLogger(__name__)


def per_class_scores(counts: np.ndarray, class_names: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class from a confusion matrix (rows: true, columns: predicted).

    A class never predicted has precision 0, a class with no images recall 0 (scikit-learn's ``zero_division=0``).
    """
    hits = np.diag(counts).astype(float)
    predicted, actual = counts.sum(axis=0).astype(float), counts.sum(axis=1).astype(float)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, actual, out=np.zeros_like(hits), where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    return {
        name: {"precision": float(p), "recall": float(r), "F1": float(f), "support": int(n)}
        for name, p, r, f, n in zip(class_names, precision, recall, f1, actual, strict=True)
    }


def plot_confusion_matrix(counts: np.ndarray, class_names: list[str], title: str, path: Path) -> Path:
    """Write a PNG of the row-normalised matrix (colour: share of the true class; text: count)."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    side = max(4.0, 0.45 * len(class_names) + 2.0)
    figure = Figure(figsize=(side + 1.0, side), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, label="share of the true class")
    ticks = np.arange(len(class_names))
    axes.set_xticks(ticks, class_names, rotation=90)
    axes.set_yticks(ticks, class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if len(class_names) <= 30:
        for (row, column), count in np.ndenumerate(counts):
            color = "white" if shares[row, column] > 0.5 else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=7, color=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


class ConfusionMatrix(Callback):
    """At the end of ``fit`` and ``test``, one confusion matrix per evaluated classifier of the module.

    Reads ``pl_module.<results_attribute>``: a dict ``{name: result}`` whose results have ``y_true``
    and ``y_pred`` (class indices; the semi-supervised classifier's ``ssl_results``: one per
    algorithm and ``cnn_head``, the fine-tuned CNN's own classifier). For each: ``plots/confusion_matrix_<name>.png``
    (row-normalised colours, counts as text, class names on the axes), all counts and per-class
    precision / recall / F1 in ``confusion_matrices.json``, the per-class scores as metrics
    ``<name>/<class>/precision|recall|F1`` (every logger, and ``trainer.callback_metrics`` for the
    summary and the report: place this callback before ``TrainingSummary``), the figure in every
    logger that takes images (TensorBoard, W&B, MLflow as an artifact), and W&B's own interactive
    confusion-matrix plot (``<name>_confusion_matrix``). A no-op when the module has no results.

    Args:
        results_attribute: Attribute of the LightningModule holding the results.
        filename: JSON file of the counts, in the run directory.

    """

    def __init__(
        self, results_attribute: str = "ssl_results", filename: str = "confusion_matrices.json"
    ) -> None:
        self.results_attribute = results_attribute
        self.filename = filename

    @staticmethod
    def _class_names(trainer: pl.Trainer, pl_module: pl.LightningModule, count: int) -> list[str]:
        names = getattr(pl_module, "class_names", None) or getattr(trainer.datamodule, "class_names", None)
        return list(names) if names and len(names) == count else [str(i) for i in range(count)]

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results: dict[str, Any] = getattr(pl_module, self.results_attribute, None) or {}
        if not results:
            return
        count = int(getattr(pl_module, "num_classes", 0) or 0)
        count = max(count, *(int(max(np.max(r.y_true), np.max(r.y_pred))) + 1 for r in results.values()))
        class_names = self._class_names(trainer, pl_module, count)
        folder = run_dir(trainer)
        table: dict[str, Any] = {"class_names": class_names, "matrices": {}}
        scores: dict[str, float] = {}
        for name, result in results.items():
            y_true, y_pred = np.asarray(result.y_true, dtype=int), np.asarray(result.y_pred, dtype=int)
            counts = confusion_matrix(y_true, y_pred, labels=list(range(count)))
            per_class = per_class_scores(counts, class_names)
            table["matrices"][name] = {
                "counts": counts.tolist(),
                "accuracy": float((y_true == y_pred).mean()),
                "per_class": per_class,
            }
            for class_name, values in per_class.items():
                label = class_name.replace("/", "_")
                scores.update({f"{name}/{label}/{k}": values[k] for k in ("precision", "recall", "F1")})
            title = f"{name}: accuracy {table['matrices'][name]['accuracy']:.3f} on {len(y_true)} images"
            png = plot_confusion_matrix(
                counts, class_names, title, folder / "plots" / f"confusion_matrix_{name}.png"
            )
            log_image_file(trainer, f"confusion_matrix/{name}", png)
            self._wandb_plot(trainer, f"{name}_confusion_matrix", y_true, y_pred, class_names)
        write_json_atomic(folder / self.filename, table)
        self._log_scores(trainer, scores)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                log_artifact_file(trainer, logger, folder / self.filename)
        log.info("Confusion matrices of %s written to %s", ", ".join(results), folder / "plots")

    @staticmethod
    def _log_scores(trainer: pl.Trainer, scores: dict[str, float]) -> None:
        """The per-class scores to every logger and into ``trainer.callback_metrics`` (summary, report)."""
        for logger in trainer.loggers:
            logger.log_metrics(scores, step=trainer.global_step)
        trainer.callback_metrics.update({name: torch.tensor(value) for name, value in scores.items()})

    @staticmethod
    def _wandb_plot(
        trainer: pl.Trainer, key: str, y_true: np.ndarray, y_pred: np.ndarray, names: list[str]
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                plot = wandb.plot.confusion_matrix(
                    y_true=y_true.tolist(), preds=y_pred.tolist(), class_names=names
                )
                logger.experiment.log({key: plot, "trainer/global_step": trainer.global_step})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module)
