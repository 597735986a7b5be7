"""What the CLI decides about a run before any class is instantiated: its directory and its defaults.

Every command writes into a folder of its own, chosen and created here through
:mod:`harvest.runs.directory`:

- ``fit`` creates ``<root>/<pipeline>_<YYYYmmdd_HHMMSS>`` (a ``_2``… suffix when another process took
  the name in the same second), or ``<root>/<pipeline>_job<id>`` under SLURM or ``torchrun`` so
  that every rank, and a requeued job, finds the same folder. An existing ``--run_name`` is refused
  unless the command resumes it (``--ckpt_path``) or says ``--overwrite true``. ``--ckpt_path`` of
  a checkpoint inside a run (or ``last``: the latest run of the pipeline) resumes that run in place.
- ``validate``/``test``/``predict`` of a run's checkpoint write into ``<run>/stages/<stage>_<time>``;
  of any other checkpoint, into a run of their own, ``<root>/<pipeline>_<stage>_<time>``.

``root`` is ``trainer.default_root_dir`` as the user gave it, else ``runs``. The trainer, its
loggers and its checkpoint callbacks are then pointed at that folder; only values the user left at
their defaults are filled in. The same name is given to every tracker.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse.typing import import_object  # type: ignore[attr-defined]
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.core.precision import resolve
from harvest.runs import directory as rd
from harvest.tracking.context import wandb_offline_by_default

log = logging.getLogger(__name__)

#: The run directory chosen by the process that started this one (the DDP launcher re-runs the command
#: per rank), with the pid of that process: all ranks agree on one directory.
RUN_NAME_ENV = "HARVEST_RUN_DIR"
_RUN_NAME_PID_ENV = RUN_NAME_ENV + "_PID"
DEFAULT_RUNS_DIR = rd.DEFAULT_RUNS_DIR
#: ``ckpt_path`` values that name no file.
_SPECIAL_CKPT = {"last", "best", "hpc"}


def runs_folder(trainer_cfg: Namespace) -> Path:
    """The folder that holds run directories: ``trainer.default_root_dir``, else ``runs``."""
    return Path(trainer_cfg.get("default_root_dir") or DEFAULT_RUNS_DIR)


def _claim(folder: Path, resume: bool, overwrite: bool) -> Path:
    """Create ``folder``; an existing run in it is kept for a resume, replaced with ``overwrite``, else refused."""
    try:
        folder.mkdir(parents=True)
        return folder
    except FileExistsError:
        pass
    if overwrite:
        log.warning("--overwrite: deleting the run in %s", folder)
        shutil.rmtree(folder)
        folder.mkdir(parents=True)
    elif not resume and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} already holds a run: resume it with --ckpt_path last, pick another --run_name, "
            "or replace it with --overwrite true."
        )
    return folder


def chose_run_dir() -> bool:
    """Whether this process chose the run directory (not a rank that inherited it from its parent)."""
    return os.environ.get(_RUN_NAME_PID_ENV) == str(os.getpid()) and rd.launcher_rank() == 0


def _inherited() -> Path | None:
    """The directory the parent process chose (a DDP rank started by Lightning), else ``None``."""
    if os.environ.get(_RUN_NAME_PID_ENV) in (None, str(os.getpid())):
        return None
    value = os.environ.get(RUN_NAME_ENV)
    return Path(value) if value else None


def _named(root: Path, explicit: str) -> Path:
    """``root/explicit``, or ``root`` when it already ends in that name (older saved configs pinned both)."""
    return root if root.name == explicit else root / explicit


def _fit_dir(root: Path, pipeline: str, explicit: str | None, ckpt: str | None, overwrite: bool) -> Path:
    job = rd.launcher_job_id()
    if explicit:
        return _claim(_named(root, explicit), resume=bool(ckpt), overwrite=overwrite)
    if job:
        folder = root / f"{pipeline}_job{job}"
        if rd.launcher_rank() != 0:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
        return _claim(folder, resume=bool(ckpt) or requeued, overwrite=overwrite)
    if ckpt:
        run = rd.latest_run(root, pipeline) if ckpt == "last" else None
        run = run or (rd.run_of_checkpoint(ckpt) if ckpt not in _SPECIAL_CKPT else None)
        if run is not None:
            log.info("Resuming run %s from %s", run, ckpt)
            return run
    return rd.create_unique(root, f"{pipeline}_{rd.timestamp()}")


def _stage_dir(root: Path, pipeline: str, stage: str, explicit: str | None, ckpt: str | None, overwrite: bool) -> Path:
    training = rd.run_of_checkpoint(ckpt) if ckpt and ckpt not in _SPECIAL_CKPT else None
    if explicit:
        if rd.is_run_dir(_named(root, explicit)) and not overwrite:
            training = _named(root, explicit)
        else:
            return _claim(_named(root, explicit), resume=False, overwrite=overwrite)
    job = rd.launcher_job_id()
    parent, base = (training / rd.STAGES, stage) if training else (root, f"{pipeline}_{stage}")
    if job:
        folder = parent / f"{base}_job{job}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return rd.create_unique(parent, f"{base}_{rd.timestamp()}")


def prepare_run_dir(subcommand: str, config: Namespace, pipeline: str) -> Path:
    """Choose and create the folder this command writes into (see the module docstring); all ranks agree.

    Args:
        subcommand: ``fit``, ``validate``, ``test`` or ``predict``.
        config: The subcommand's parsed config (``run_name``, ``ckpt_path``, ``overwrite``, ``trainer``).
        pipeline: The pipeline's name, the first part of generated run names.

    Returns:
        The run directory (``fit``) or stage directory.
    """
    folder = _inherited()
    if folder is None:
        root, ckpt = runs_folder(config.trainer), config.get("ckpt_path")
        ckpt = str(ckpt) if ckpt else None
        explicit, overwrite = config.get("run_name"), bool(config.get("overwrite"))
        if subcommand == "fit":
            folder = _fit_dir(root, pipeline, explicit, ckpt, overwrite)
        else:
            folder = _stage_dir(root, pipeline, subcommand, explicit, ckpt, overwrite)
        os.environ[RUN_NAME_ENV] = str(folder)
        os.environ[_RUN_NAME_PID_ENV] = str(os.getpid())
    return folder


def _items(value: Any) -> list[Namespace]:
    if isinstance(value, Namespace):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, Namespace)]
    return []


def _is(item: Namespace, cls: type) -> bool:
    try:
        return issubclass(import_object(item.class_path), cls)
    except (ImportError, AttributeError, TypeError, ValueError):
        return False


def _fill(init_args: Namespace, key: str, default: Any, value: Any) -> None:
    if init_args.get(key, default) == default:
        init_args[key] = value


def apply_run_layout(trainer_cfg: Namespace, folder: Path, pipeline: str) -> Path:
    """Point the trainer, its loggers and its checkpoint callbacks at ``folder``.

    Args:
        trainer_cfg: The ``trainer`` section of the parsed config, changed in place.
        folder: The run (or stage) directory from :func:`prepare_run_dir`.
        pipeline: Pipeline name, used as MLflow experiment and W&B project when those are unset.

    Returns:
        ``folder``.
    """
    trainer_cfg.default_root_dir = str(folder)
    name = rd.tracker_run_name(folder)
    for item in _items(trainer_cfg.get("logger")):
        args = item.get("init_args") or Namespace()
        item.init_args = args
        if _is(item, TensorBoardLogger) or _is(item, CSVLogger):
            if args.get("name", "lightning_logs") == "lightning_logs" and args.get("version") is None:
                args.save_dir, args.name, args.version = str(folder.parent), folder.name, ""
        elif _is(item, MLFlowLogger):
            _fill(args, "experiment_name", "lightning_logs", pipeline)
            _fill(args, "run_name", None, name)
        elif _is(item, WandbLogger):
            _fill(args, "name", None, name)
            _fill(args, "save_dir", ".", str(folder.resolve()))  # a shared wandb-core has its own cwd
            _fill(args, "project", None, os.environ.get("WANDB_PROJECT") or f"harvest-{pipeline}")
            if not args.get("log_model"):
                _fill(args, "offline", False, wandb_offline_by_default())  # no API key: offline

    for item in _items(trainer_cfg.get("callbacks")):
        if _is(item, ModelCheckpoint):
            item.init_args = item.get("init_args") or Namespace()
            _fill(item.init_args, "dirpath", None, str(folder / rd.CHECKPOINTS))
    return folder


def drop_progress_bars(trainer_cfg: Namespace) -> None:
    """With ``enable_progress_bar: false``, leave out the progress-bar callbacks a recipe lists."""
    if trainer_cfg.get("enable_progress_bar") is False and isinstance(trainer_cfg.get("callbacks"), list):
        trainer_cfg.callbacks = [item for item in trainer_cfg.callbacks if not _is(item, ProgressBar)]


def resolve_precision(trainer_cfg: Namespace) -> None:
    """Run an autocast precision this machine cannot run fast as ``32-true``, saying so once.

    The same config then runs on a laptop CPU and on a GPU node; ``harvest.core.precision`` decides.
    """
    precision, message = resolve(trainer_cfg.get("precision"), trainer_cfg.get("accelerator"))
    if message:
        if rank_zero_only.rank == 0:
            log.warning(message)
        trainer_cfg.precision = precision
