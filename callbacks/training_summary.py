"""``training_summary.json``: what a run did, written into its run directory as it goes."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.core.errors import INTERRUPTIONS
from harvest.runs import directory as rd
from harvest.runs.directory import logged_values, scalar_metrics, write_json_atomic


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class TrainingSummary(Callback):
    """Write ``training_summary.json`` into the run directory (or the stage directory of a test…).

    Written after every training epoch (so an interrupted run still leaves one), at the end of
    ``fit`` and after ``validate`` / ``test``, on rank zero only, with or without loggers. Keys:
    ``run_name``, ``stage``, ``status`` (``running``, ``completed``, ``interrupted`` after a
    signal, ``failed: …``), ``epochs_trained``, ``best_epoch``, ``monitor``, ``mode``,
    ``best_score``, ``best_checkpoint`` and ``last_checkpoint`` (as on disk, else ``null``),
    ``history`` (one dict of epoch metrics per epoch, each epoch once, a resume included),
    ``final_metrics`` (every metric logged, with its last value), ``results`` (the LightningModule's
    ``run_results`` dict when it has one, e.g. the best SSL algorithm's name), ``git`` (commit and
    uncommitted changes of the code that trained), ``training_run`` and ``origin_run`` (the run a
    stage evaluates; the run whose config was rerun), ``skipped_files`` (how many files the data
    module left out under ``on_bad_data: skip``; the dataset card names them) and ``timing``.

    Args:
        filename: Name of the file inside the run directory.
    """

    def __init__(self, filename: str = "training_summary.json") -> None:
        self.filename = filename
        self.history: list[dict[str, Any]] = []
        self.final_metrics: dict[str, float | None] = {}
        self.timing: dict[str, Any] = {}
        self.status = "not started"
        self._resumed = False
        self._epoch_started = 0.0
        self._fit_started = 0.0

    # ------------------------------------------------------------------ lifecycle
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.status = "running"
        self._fit_started = time.perf_counter()
        self.timing.setdefault("started", _now())
        self.timing.setdefault("epoch_seconds", [])

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.ckpt_path:  # the loops are restored now: current_epoch is the first resumed epoch
            self._resume_history(trainer)

    def _resume_history(self, trainer: pl.Trainer) -> None:
        """Keep each epoch before the resumed one once: the checkpoint's rows, completed by what the file has.

        A checkpoint written at validation end does not hold its own epoch's row yet (the row is
        written at the end of the training epoch); the summary file written after it does.
        """
        start = trainer.current_epoch
        rows = {row["epoch"]: row for row in self.history}
        for row in rd.read_summary(rd.run_dir(trainer)).get("history") or []:
            rows.setdefault(row.get("epoch"), row)
        self.history = [rows[epoch] for epoch in sorted(e for e in rows if isinstance(e, int) and e < start)]
        self._resumed = True  # the rows are complete; what the restored loop holds is not the last epoch's
        self.timing["epoch_seconds"] = list(self.timing.get("epoch_seconds", []))[: len(self.history)]

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.status = "running"

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.status = "running"

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
            self.status = "completed"
            self._finish(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.status = "completed"
        self._finish(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, INTERRUPTIONS):
            self.status = "interrupted"
        else:
            self.status = f"failed: {type(exception).__name__}: {exception}"
        self._finish(trainer)

    def _refresh_last_row(self, trainer: pl.Trainer) -> None:
        # Callbacks run before the LightningModule's own ``on_train_epoch_end``; what it logs there
        # belongs to the epoch just ended and is still the latest value when the next epoch starts.
        if self._resumed:
            self._resumed = False
            return
        if self.history and self.history[-1]["epoch"] == trainer.current_epoch - 1:
            self.history[-1].update(scalar_metrics(trainer.callback_metrics))

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "timing": self.timing}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.timing = dict(state_dict.get("timing", {}))
        self.timing.pop("finished", None)

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
        best_path = _on_disk(getattr(checkpoint, "best_model_path", ""))
        best_score = getattr(checkpoint, "best_model_score", None)
        last_path = _on_disk(getattr(checkpoint, "last_model_path", ""))
        if best_score is None and best_row is not None:
            best_score = best_row[monitor]
        folder = rd.run_dir(trainer)
        stage = str(trainer.state.fn.value) if trainer.state.fn else None
        return {
            "run_name": folder.name,
            "stage": stage,
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
            "git": rd.recorded_git(folder) or None,
            "training_run": str(rd.training_run_of(folder)) if rd.is_stage_dir(folder) else None,
            "origin_run": rd.run_record(folder).get("origin_run"),
            "timing": self.timing,
        }

    @rank_zero_only
    def _write(self, trainer: pl.Trainer) -> None:
        write_json_atomic(rd.run_dir(trainer) / self.filename, self.summary(trainer))


def _on_disk(path: str | None) -> str | None:
    """``path`` when the file is there (what the summary names must exist), else ``None``."""
    return path if path and Path(path).is_file() else None
