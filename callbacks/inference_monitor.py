"""Inference monitoring for ``harvest predict``: confidence, latency, throughput, accuracy, drift."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from callbacks.logger_media import log_image_file
from callbacks.monitor_plots import write_plots
from harvest.monitoring.drift import DriftThresholds, drift_report
from harvest.monitoring.features import EmbeddingCapture
from harvest.monitoring.reference_profile import read_reference
from harvest.monitoring.stats import MonitorStats, observe
from harvest.runs.directory import write_json_atomic
from harvest.tracking.context import run_dir

log = logging.getLogger(__name__)


class InferenceMonitor(Callback):
    """Watch a prediction run the way production monitoring would.

    Per batch it times ``predict_step``, records each prediction (class, or detections per image),
    its confidence, correctness where the data carries labels, and the image's embedding (captured
    by a forward hook, no extra pass); every ``log_every_n_batches`` it sends the running
    ``monitor/accuracy``, ``monitor/avg_confidence``, ``monitor/avg_inference_time_ms`` and
    ``monitor/throughput_samples_per_sec`` to every attached logger. At the end it writes
    ``<run dir>/monitoring_report.json`` (model, input, time, metrics, latency percentiles,
    prediction distribution, confidence histogram) and two plots, and, given a ``reference``
    (the registered model's ``reference_profile.json``, or an earlier report), the drift metrics of
    :mod:`harvest.monitoring.drift` (``monitor/drift_score`` and the rest). Rank zero's share under DDP.

    Args:
        reference: ``reference_profile.json`` (or a ``monitoring_report.json``) to measure drift against.
        drift_threshold: ``monitor/drift_score`` (KL divergence) above which drift is reported.
        pvalue_threshold: p-value of the confidence and embedding tests below which drift is reported.
        score_threshold: Detection score counted as a detection (detectors only).
        log_every_n_batches: How often running metrics go to the loggers.
        report_name: File name of the report in the run directory.
        model: How the report names the model (e.g. ``grocery-ssl-classifier:3``).
        input: How the report names the images (default: the data module's ``predict_root``).

    """

    #: ``harvest predict`` keeps the loggers for this callback (without one it opens no tracker run).
    logs_during_predict = True

    def __init__(
        self,
        reference: str | None = None,
        drift_threshold: float = 0.5,
        pvalue_threshold: float = 0.01,
        score_threshold: float = 0.5,
        log_every_n_batches: int = 10,
        report_name: str = "monitoring_report.json",
        model: str | None = None,
        input: str | None = None,  # noqa: A002 - the report's word for it
    ) -> None:
        self.reference = Path(reference) if reference else None
        self.thresholds = DriftThresholds(drift_score=drift_threshold, pvalue=pvalue_threshold)
        self.score_threshold = score_threshold
        self.log_every_n_batches = log_every_n_batches
        self.report_name = report_name
        self.model, self.input = model, input
        self.stats = MonitorStats()
        self.report: dict[str, Any] = {}
        self._started = 0.0
        self._capture: EmbeddingCapture | None = None

    def _reference(self) -> tuple[dict[str, Any], np.ndarray | None] | None:
        return read_reference(self.reference) if self.reference is not None else None

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reference()  # a bad reference fails before any image is read
        kind = "detector" if not hasattr(pl_module, "classify") else "classifier"
        self.stats = MonitorStats(kind, list(getattr(pl_module, "class_names", [])))
        self._capture = EmbeddingCapture(pl_module).attach()

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
        embeddings = self._capture.take() if self._capture else None
        self.stats.add(*observe(outputs, labels, self.score_threshold), seconds=seconds, embeddings=embeddings)
        if (batch_idx + 1) % self.log_every_n_batches == 0:
            self._log(trainer, self.stats.metrics())

    @rank_zero_only
    def _log(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self.stats.samples)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._capture is not None:
            self._capture.detach()
        predict_root = getattr(trainer.datamodule, "predict_root", None)
        self.report = {
            "model": self.model or type(pl_module).__name__,
            "input": self.input or (str(predict_root) if predict_root else "the data module's test split"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "metrics": self.stats.metrics(),
            "latency_ms_per_batch": self.stats.latency(),
            **self.stats.summary(),
        }
        reference = self._reference()
        if reference is not None:
            drift = drift_report(
                reference[0], self.report, reference[1], self.stats.embedding_sample(), self.thresholds
            )
            self.report["metrics"].update(drift.pop("metrics"))
            self.report["drift"] = {"reference": str(self.reference), **drift}
        self._finish(trainer, reference[0] if reference else None)

    @rank_zero_only
    def _finish(self, trainer: pl.Trainer, reference: dict[str, Any] | None) -> None:
        folder = run_dir(trainer)
        write_json_atomic(folder / self.report_name, self.report)
        self._log(trainer, self.report["metrics"])
        for name, path in write_plots(self.report, reference, folder / "plots").items():
            log_image_file(trainer, f"monitor/{name}", path, step=self.stats.samples)
        metrics = self.report["metrics"]
        log.info(
            "monitoring %s on %s: %d samples, avg confidence %.3f, %.2f ms/sample, %.1f samples/s%s -> %s",
            self.report["model"],
            self.report["input"],
            self.stats.samples,
            metrics["monitor/avg_confidence"],
            metrics["monitor/avg_inference_time_ms"],
            metrics["monitor/throughput_samples_per_sec"],
            f", accuracy {metrics['monitor/accuracy']:.3f}" if "monitor/accuracy" in metrics else "",
            folder / self.report_name,
        )
        drift = self.report.get("drift")
        if drift and drift["detected"]:
            log.warning("monitoring: DRIFT against %s: %s.", self.reference, "; ".join(drift["reasons"]))
        elif drift:
            log.info(
                "monitoring: no drift against %s (drift_score %.3f).", self.reference, metrics["monitor/drift_score"]
            )
