"""Weights & Biases: the full resolved config as the run config, offline said in one line, one run per job."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from callbacks.stage_start import StageStartCallback
from harvest.core.errors import INTERRUPTIONS
from harvest.runs import directory as rd
from harvest.runs.directory import run_dir
from harvest.tracking.context import git_info, loggers_of, pipeline, run_config, tracked_config, wandb_api_key_available

log = logging.getLogger(__name__)


def is_offline(run: object) -> bool:
    """Whether a W&B run writes to disk only (offline mode)."""
    settings = getattr(run, "settings", None)
    return getattr(settings, "mode", None) in ("offline", "dryrun")


def offline_dir(run: object) -> Path:
    """The offline run's folder, the argument of ``wandb sync``."""
    return Path(run.dir).parent  # type: ignore[attr-defined]


def _offline_reason(logger: WandbLogger) -> str:
    if not logger._offline:
        return f"WANDB_MODE={os.environ.get('WANDB_MODE')}"
    if not wandb_api_key_available():
        return "no API key: set WANDB_API_KEY or run `wandb login`"
    return "offline: true in the logger's config"


class WandbTracking(StageStartCallback):
    """Complete what ``WandbLogger`` sends; a no-op without one.

    W&B's run is created on rank zero only (Lightning's ``WandbLogger`` does that), so a DDP job is
    one run; this callback acts on rank zero too. It adds the full resolved CLI config
    (``<run dir>/config.yaml``, nested as in the file) to the run config, with a ``harvest`` section
    (pipeline, run directory, git commit, uncommitted changes or not). When the run is offline (the
    CLI chooses offline when no API key is set, see ``harvest.lightning_cli.run_setup``), one line says so and
    gives the ``wandb sync`` command.
    The W&B run id is kept in ``<run dir>/run.json``: a resume (``--ckpt_path last``) continues the
    same W&B run. Every run is in the group of its training run, with ``job_type`` its stage
    (``fit``, ``validate``, ``test``), so a test of a run's checkpoint sits beside the run that
    trained it. A run stopped by a signal is marked preempted.
    Project, entity and tags come from the logger's config or the usual ``WANDB_PROJECT``,
    ``WANDB_ENTITY`` and ``WANDB_TAGS`` variables.

    Args:
        finish: Finish the W&B run when the stage ends, so a second run in the same process (sweeps,
            notebooks, tests) starts its own, and a later ``trainer.test()`` too. Set ``false`` to keep
            logging into the same run after ``fit``.

    """

    def __init__(self, finish: bool = True) -> None:
        self.finish = finish
        self._announced: set[str] = set()

    def preflight(self, trainer: pl.Trainer) -> None:
        """Before Lightning opens the W&B run (``HarvestCLI`` calls it): its group, job type and, on a resume, id."""
        folder, stage = run_dir(trainer), trainer.state.fn.value if trainer.state.fn else "fit"
        previous = rd.run_record(folder).get("wandb_run_id") if stage == "fit" else None
        for logger in loggers_of(trainer, WandbLogger):
            if logger._experiment is None:  # before Lightning opens the run
                logger._wandb_init.setdefault("group", rd.training_run_of(folder).name)
                logger._wandb_init.setdefault("job_type", stage)
                if previous and not logger._wandb_init.get("id"):
                    logger._wandb_init.update(id=previous, resume="allow")
                    logger._id = previous

    @rank_zero_only
    def stage_started(self, trainer: pl.Trainer) -> None:
        config = run_config(trainer) or {}
        git = git_info()
        for logger in loggers_of(trainer, WandbLogger):
            run = logger.experiment
            if run.id in self._announced:
                continue
            self._announced.add(run.id)
            rd.update_run_record(run_dir(trainer), wandb_run_id=run.id)
            extra = {"pipeline": pipeline(trainer), "run_dir": str(run_dir(trainer).resolve())}
            extra.update({f"git_{key}": value for key, value in git.items()})
            run.config.update({**tracked_config(config), "harvest": extra}, allow_val_change=True)
            if is_offline(run):
                log.warning(
                    "W&B is offline (%s): upload this run later with `wandb sync %s`",
                    _offline_reason(logger),
                    offline_dir(run),
                )

    @rank_zero_only
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, INTERRUPTIONS):
            return
        for logger in loggers_of(trainer, WandbLogger):
            if logger._experiment is not None:
                logger.experiment.mark_preempting()
                logger.experiment.finish(exit_code=1)
                logger._experiment = None

    @rank_zero_only
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.finish:
            return
        for logger in loggers_of(trainer, WandbLogger):
            if logger._experiment is not None:
                logger.finalize(
                    "success"
                )  # Lightning's own checkpoint upload (log_model) before the run closes
                logger.experiment.finish()
                logger._experiment = (
                    None  # a later stage of this trainer (a script's test()) starts a new run
                )
