"""Register the model a ``fit`` produced in the model registry, as the last step of the run.

Lightning's loggers upload checkpoint files; this callback makes the best one a registered,
versioned model (``latest``), optionally promoted to ``staging`` when it beats the version there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger

from harvest.registry.api import Registry, RegistryError, VersionInfo, open_registry
from harvest.runs.directory import run_dir as run_dir_of
from harvest.runs.directory import scalar_metrics

log = logging.getLogger(__name__)

STAGING = "staging"


def _passes(score: float, reference: float, mode: str, strict: bool) -> bool:
    if mode == "min":
        return score < reference if strict else score <= reference
    return score > reference if strict else score >= reference


class ModelRegistryUpload(Callback):
    """At the end of ``fit`` (global rank zero), register the best checkpoint as a new version of ``name``.

    Runs once everything else of ``fit`` is done (in ``teardown``), so the checkpoint holds what
    the module adds at the end of training (the grocery classifier's fitted SSL estimators). A
    registry that cannot be reached never fails the run: the finished run is kept and the message
    names the command that registers it later. Nothing happens with ``fast_dev_run`` or after an
    interrupted fit.

    Args:
        name: Registered model name, e.g. ``grocery-ssl-classifier``.
        tracking_uri: Registry URI; default: the attached MLFlowLogger's, else ``$MLFLOW_TRACKING_URI``
            or ``sqlite:///mlflow.db``; ``wandb://ENTITY/PROJECT`` for the W&B Registry.
        monitor: Metric that decides ``threshold`` and ``staging``; default: the one the module names
            in ``run_results["monitor"]`` (the grocery classifier: ``summary/val_accuracy``, the
            validation accuracy of the predictor ``predict`` serves), else the ModelCheckpoint's (its
            best score).
        mode: ``max`` or ``min`` for ``monitor``; default: the ModelCheckpoint's mode, else ``max``.
        threshold: Register only when ``monitor`` is at least this good (``>=`` for max, ``<=`` for min).
        promote_to_staging: Point ``staging`` at the new version when it beats the current ``staging``
            version on ``monitor`` (or when there is none).
        aliases: More aliases to point at every new version.

    """

    def __init__(
        self,
        name: str,
        tracking_uri: str | None = None,
        monitor: str | None = None,
        mode: str | None = None,
        threshold: float | None = None,
        promote_to_staging: bool = False,
        aliases: list[str] | None = None,
    ) -> None:
        if mode not in (None, "min", "max"):
            raise ValueError(f"ModelRegistryUpload mode={mode!r}: use 'max' or 'min'.")
        self.name = name
        self.tracking_uri = tracking_uri
        self.monitor = monitor
        self.mode = mode
        self.threshold = threshold
        self.promote_to_staging = promote_to_staging
        self.aliases = list(aliases or [])
        self.registered: VersionInfo | None = None
        self._fit_finished = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_finished = False
        self.registered = None

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_finished = not trainer.interrupted and not trainer.fast_dev_run

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self._fit_finished and trainer.is_global_zero:
            self._fit_finished = False
            self.register(trainer)

    # ------------------------------------------------------------------ helpers
    def _uri(self, trainer: pl.Trainer) -> str | None:
        if self.tracking_uri:
            return self.tracking_uri
        mlflow = next((lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)), None)
        return mlflow._tracking_uri if mlflow is not None else None

    def _score(self, trainer: pl.Trainer, metrics: dict[str, float]) -> tuple[str | None, str, float | None]:
        checkpoint = trainer.checkpoint_callback
        ckpt_monitor = getattr(checkpoint, "monitor", None)
        # a module that names the metric of what it serves (the grocery classifier's SSL predictor) decides
        served = getattr(trainer.lightning_module, "run_results", None) or {}
        monitor = self.monitor or served.get("monitor") or ckpt_monitor
        ckpt_mode = getattr(checkpoint, "mode", None) if monitor == ckpt_monitor else None
        mode = self.mode or (served.get("mode") if monitor == served.get("monitor") else ckpt_mode) or "max"
        best = getattr(checkpoint, "best_model_score", None) if monitor == ckpt_monitor else None
        score = scalar_metrics({"s": best}).get("s") if best is not None else metrics.get(monitor or "")
        return monitor, mode, score

    def register(self, trainer: pl.Trainer) -> None:
        """Register the run's best checkpoint now (what ``teardown`` of ``fit`` calls)."""
        checkpoint = trainer.checkpoint_callback
        path = getattr(checkpoint, "best_model_path", "") or getattr(checkpoint, "last_model_path", "")
        run_dir = run_dir_of(trainer)
        later = f"register it later with `harvest registry register {run_dir} --name {self.name}`"
        if not path or not Path(path).is_file():
            log.warning(
                "ModelRegistryUpload: the run wrote no checkpoint to register (add a ModelCheckpoint)."
            )
            return
        metrics = {
            k: v
            for k, v in scalar_metrics({**trainer.logged_metrics, **trainer.callback_metrics}).items()
            if v is not None
        }
        best = scalar_metrics({"s": getattr(checkpoint, "best_model_score", None)}).get("s")
        if getattr(checkpoint, "monitor", None) and best is not None:
            metrics[checkpoint.monitor] = best  # the registered checkpoint's own score, not the last epoch's
        monitor, mode, score = self._score(trainer, metrics)
        if monitor and score is not None:
            metrics[monitor] = (
                score  # the registered checkpoint is the best one: record its score, not the last epoch's
            )
        if self.threshold is not None:
            if score is None:
                log.warning(
                    "Not registered: %s was not logged, so threshold %s cannot be checked; %s.",
                    monitor,
                    self.threshold,
                    later,
                )
                return
            if not _passes(score, self.threshold, mode, strict=False):
                log.info(
                    "Not registered: %s = %.4f does not pass the threshold %s (mode %s).",
                    monitor,
                    score,
                    self.threshold,
                    mode,
                )
                return
        try:
            registry = open_registry(self._uri(trainer))
            info = registry.register(path, self.name, metrics, aliases=self.aliases)
            log.info(
                "Registered %s (%s) in %s from %s.", info.label, ", ".join(info.aliases), registry.uri, path
            )
            self.registered = info
            if self.promote_to_staging:
                self._maybe_stage(registry, info, monitor, mode, score)
        except RegistryError as err:
            log.warning("ModelRegistryUpload: %s The run itself is complete; %s.", err, later)

    def _maybe_stage(
        self, registry: Registry, info: VersionInfo, monitor: str | None, mode: str, score: float | None
    ) -> None:
        try:
            current = registry.resolve(f"{self.name}@{STAGING}")
        except RegistryError:
            current = None
        reference = current.metrics.get(monitor or "") if current is not None else None
        if (
            current is not None
            and reference is not None
            and (score is None or not _passes(score, reference, mode, strict=True))
        ):
            log.info(
                "%s stays on %s: %s %s does not beat %.4f.", STAGING, current.label, monitor, score, reference
            )
            return
        previous, _ = registry.promote(self.name, info.version, STAGING)
        log.info(
            "%s: %s -> %s (%s = %s).",
            STAGING,
            previous.label if previous else "none",
            info.label,
            monitor,
            score,
        )
