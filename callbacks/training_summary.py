"""``training_summary.json``: what a run did, written into its run directory as it goes."""

from __future__ import annotations

import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.tracking import run_dir


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """Plain floats from a metrics dict (one-element tensors included); non-finite values become ``None``."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value) if math.isfinite(value) else None
    return out


def logged_values(trainer: pl.Trainer) -> dict[str, float | None]:
    """Every scalar metric logged so far, with its latest value (what loggers and callbacks have seen)."""
    values = scalar_metrics(trainer.logged_metrics)
    values.update(scalar_metrics(trainer.callback_metrics))
    return values


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON next to ``path`` and rename it into place, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TrainingSummary(Callback):
    """Write ``training_summary.json`` into the run directory (``trainer.default_root_dir``).

    Written after every training epoch (so an interrupted run still leaves one), at the end of
    ``fit`` and after ``validate`` / ``test``, on rank zero only, with or without loggers. Keys:
    ``run_name``, ``status``, ``epochs_trained``, ``best_epoch``, ``monitor``, ``mode``,
    ``best_score``, ``best_checkpoint``, ``last_checkpoint``, ``history`` (one dict of epoch
    metrics per epoch), ``final_metrics`` (every metric logged, with its last value), ``results``
    (the LightningModule's ``run_results`` dict when it has one, e.g. the best SSL algorithm's name),
    ``skipped_files`` (how many files the data module left out under ``on_bad_data: skip``; the
    dataset card names them) and ``timing``.

    Args:
        filename: Name of the file inside the run directory.
    """

    def __init__(self, filename: str = "training_summary.json") -> None:
        self.filename = filename
        self.history: list[dict[str, Any]] = []
        self.final_metrics: dict[str, float | None] = {}
        self.timing: dict[str, Any] = {}
        self.status = "not started"
        self._epoch_started = 0.0
        self._fit_started = 0.0

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.status = "running"
        self._fit_started = time.perf_counter()
        self.timing.setdefault("started", _now())
        self.timing.setdefault("epoch_seconds", [])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._refresh_last_row(trainer)
        self._epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._epoch_started
        self.timing["epoch_seconds"].append(round(seconds, 3))
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(scalar_metrics(trainer.callback_metrics))
        self.history.append(row)
        self._write(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # before the LightningModule's own on_train_end: what it logs there (end-of-fit results)
        # goes to final_metrics, not into the last epoch's row
        self._refresh_last_row(trainer)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.status = "interrupted" if trainer.interrupted else "completed"
        self.timing["fit_seconds"] = round(time.perf_counter() - self._fit_started, 3)
        self._finish(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._finish(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.status = f"failed: {type(exception).__name__}: {exception}"
        self._finish(trainer)

    def _refresh_last_row(self, trainer: pl.Trainer) -> None:
        # Callbacks run before the LightningModule's own ``on_train_epoch_end``; what it logs there
        # belongs to the epoch just ended and is still the latest value when the next epoch starts.
        if self.history and self.history[-1]["epoch"] == trainer.current_epoch - 1:
            self.history[-1].update(scalar_metrics(trainer.callback_metrics))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "timing": self.timing}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.timing = dict(state_dict.get("timing", {}))

    # ------------------------------------------------------------------ content
    def _finish(self, trainer: pl.Trainer) -> None:
        self.timing["finished"] = _now()
        self.final_metrics.update(logged_values(trainer))
        self._write(trainer)

    @staticmethod
    def _monitor(trainer: pl.Trainer) -> tuple[str | None, str]:
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.monitor:
                return callback.monitor, callback.mode
        for callback in trainer.callbacks:
            if isinstance(callback, EarlyStopping):
                return callback.monitor, callback.mode
        return None, "min"

    def summary(self, trainer: pl.Trainer) -> dict[str, Any]:
        """The summary as a dict (what is written to the file)."""
        monitor, mode = self._monitor(trainer)
        scored = [row for row in self.history if monitor and row.get(monitor) is not None]
        best_row = (min if mode == "min" else max)(scored, key=lambda r: r[monitor]) if scored else None
        checkpoint = trainer.checkpoint_callback
        best_path = getattr(checkpoint, "best_model_path", "") or None
        best_score = getattr(checkpoint, "best_model_score", None)
        last_path = getattr(checkpoint, "last_model_path", "") or None
        if best_score is None and best_row is not None:
            best_score = best_row[monitor]
        return {
            "run_name": run_dir(trainer).name,
            "status": self.status,
            "epochs_trained": len(self.history),
            "best_epoch": best_row["epoch"] if best_row else None,
            "monitor": monitor,
            "mode": mode,
            "best_score": scalar_metrics({"s": best_score}).get("s") if best_score is not None else None,
            "best_checkpoint": best_path,
            "last_checkpoint": last_path,
            "history": self.history,
            "final_metrics": dict(sorted(self.final_metrics.items())),
            "results": getattr(trainer.lightning_module, "run_results", None),
            "skipped_files": len(getattr(trainer.datamodule, "skipped_files", None) or []),
            "timing": self.timing,
        }

    @rank_zero_only
    def _write(self, trainer: pl.Trainer) -> None:
        write_json_atomic(run_dir(trainer) / self.filename, self.summary(trainer))
