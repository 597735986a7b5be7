"""Inference monitoring for ``harvest predict``: confidence, latency, throughput, accuracy, drift."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from callbacks.logger_media import log_image_file
from callbacks.training_summary import write_json_atomic
from harvest.monitoring_stats import MonitorStats, observe
from harvest.tracking import run_dir

log = logging.getLogger(__name__)


class InferenceMonitor(Callback):
    """Watch a prediction run the way production monitoring would.

    Per batch it times ``predict_step`` and records each prediction's confidence (and correctness
    where the data carries labels); every ``log_every_n_batches`` it sends the running
    ``monitor/accuracy``, ``monitor/avg_confidence``, ``monitor/avg_inference_time_ms`` and
    ``monitor/throughput_samples_per_sec`` to every attached logger. At the end it writes
    ``<run dir>/monitoring_report.json`` (metrics, latency percentiles, prediction distribution,
    confidence histogram) and two plots, and, given a ``reference`` report of a trusted run,
    ``monitor/drift_score`` (PSI of the confidence histogram) and ``monitor/prediction_drift_js``.
    Statistics are those of rank zero's share of the data under DDP.

    Args:
        reference: A ``monitoring_report.json`` to measure drift against (e.g. of the test split).
        psi_threshold: Confidence PSI above which drift is reported.
        js_threshold: Prediction-distribution JS divergence above which drift is reported.
        score_threshold: Detection score counted as a detection (detectors only).
        log_every_n_batches: How often running metrics go to the loggers.
        report_name: File name of the report in the run directory.
    """

    #: ``harvest predict`` keeps the loggers for this callback (without one it opens no tracker run).
    logs_during_predict = True

    def __init__(
        self,
        reference: str | None = None,
        psi_threshold: float = 0.2,
        js_threshold: float = 0.1,
        score_threshold: float = 0.5,
        log_every_n_batches: int = 10,
        report_name: str = "monitoring_report.json",
    ) -> None:
        self.reference = Path(reference) if reference else None
        self.psi_threshold, self.js_threshold = psi_threshold, js_threshold
        self.score_threshold = score_threshold
        self.log_every_n_batches = log_every_n_batches
        self.report_name = report_name
        self.stats = MonitorStats()
        self.report: dict[str, Any] = {}
        self._started = 0.0

    def _reference(self) -> dict[str, Any] | None:
        if self.reference is None:
            return None
        try:
            reference = json.loads(self.reference.read_text())
            usable = isinstance(reference["confidence_histogram"]["counts"], list) and isinstance(
                reference["prediction_distribution"], dict
            )
        except KeyError as error:
            usable, reference = False, f"no key {error}"
        except (OSError, ValueError, TypeError) as error:
            usable, reference = False, str(error)
        if not usable:
            raise ValueError(
                f"InferenceMonitor reference={self.reference}: not a monitoring report ({reference}); "
                "pass the monitoring_report.json written by an earlier `harvest predict`/`harvest monitor`."
            )
        return reference

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reference()  # a bad reference fails before any image is read
        self.stats = MonitorStats()

    def on_predict_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self._started = time.perf_counter()

    def on_predict_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        seconds = time.perf_counter() - self._started
        labels = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 and torch.is_tensor(batch[1]) else None
        self.stats.add(*observe(outputs, labels, self.score_threshold), seconds=seconds)
        if (batch_idx + 1) % self.log_every_n_batches == 0:
            self._log(trainer, self.stats.metrics())

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self.stats.samples)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report = self.stats.report(self._reference(), self.psi_threshold, self.js_threshold)
        self._finish(trainer)

    @rank_zero_only
    def _finish(self, trainer: pl.Trainer) -> None:
        folder = run_dir(trainer)
        write_json_atomic(folder / self.report_name, self.report)
        self._log(trainer, self.report["metrics"])
        for name, path in self._plots(folder / "plots").items():
            log_image_file(trainer, f"monitor/{name}", path, step=self.stats.samples)
        metrics = self.report["metrics"]
        log.info(
            "monitoring: %d samples, avg confidence %.3f, %.2f ms/sample, %.1f samples/s%s -> %s",
            self.stats.samples,
            metrics["monitor/avg_confidence"],
            metrics["monitor/avg_inference_time_ms"],
            metrics["monitor/throughput_samples_per_sec"],
            f", accuracy {metrics['monitor/accuracy']:.3f}" if "monitor/accuracy" in metrics else "",
            folder / self.report_name,
        )
        drift = self.report.get("drift")
        if drift and drift["detected"]:
            log.warning(
                "monitoring: DRIFT against %s: confidence PSI %.3f (threshold %.2f), "
                "prediction JS %.3f (threshold %.2f).",
                self.reference,
                drift["confidence_psi"],
                self.psi_threshold,
                drift["prediction_js"],
                self.js_threshold,
            )

    def _plots(self, folder: Path) -> dict[str, Path]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "confidence_histogram": folder / "monitor_confidence_histogram.png",
            "prediction_distribution": folder / "monitor_prediction_distribution.png",
        }
        histogram = self.report["confidence_histogram"]
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.bar(histogram["bins"][:-1], histogram["counts"], width=0.1, align="edge")
        ax.set(xlabel="confidence", ylabel="predictions", title="Confidence histogram")
        fig.tight_layout()
        fig.savefig(paths["confidence_histogram"], dpi=100)
        plt.close(fig)
        distribution = self.report["prediction_distribution"]
        fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(distribution)), 3))
        ax.bar(list(distribution), list(distribution.values()))
        ax.set(ylabel="predictions", title="Prediction distribution")
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        fig.savefig(paths["prediction_distribution"], dpi=100)
        plt.close(fig)
        return paths
