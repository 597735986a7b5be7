"""What the CLI decides about a run before any class is instantiated.

A run is named ``<pipeline>_<YYYYmmdd_HHMMSS>`` (the seed's ``fuji_apples_20250101_120000``) and
lives in one directory, ``<trainer.default_root_dir or runs>/<run name>/``, holding the resolved
``config.yaml``, ``checkpoints/``, ``training_summary.json``, ``plots/`` and the TensorBoard event
files. The same name is given to every tracker, so a run is found under one name everywhere.

Only values the user left at their defaults are filled in; anything set in a config or on the
command line is kept.
"""

from __future__ import annotations

import logging
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from jsonargparse.typing import import_object  # type: ignore[attr-defined]
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from harvest.precision import resolve
from harvest.tracking import wandb_offline_by_default

log = logging.getLogger(__name__)

#: Shared with child processes (DDP launches the script again per rank) so all ranks agree on the name.
RUN_NAME_ENV = "HARVEST_RUN_NAME"
_RUN_NAME_PID_ENV = "HARVEST_RUN_NAME_PID"
DEFAULT_RUNS_DIR = "runs"


def pipeline_name(data_cfg: Any) -> str:
    """The ``pipeline`` class attribute of the configured data module, else its class name in snake case."""
    class_path = getattr(data_cfg, "class_path", None)
    if not class_path:
        return "harvest"
    cls = import_object(class_path)
    return getattr(cls, "pipeline", None) or re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


def resolve_run_name(
    explicit: str | None, pipeline: str, now: datetime | None = None, runs_root: Path | None = None
) -> str:
    """The run name: ``explicit``, else the one a parent process chose, else a new timestamped one.

    A name found in the environment is reused only when another process put it there (the DDP
    launcher's parent, or the user): a second run started in the same process gets its own name,
    with a ``_2``, ``_3``… suffix when a run of that name already exists under ``runs_root``.
    """
    inherited = os.environ.get(RUN_NAME_ENV) if os.environ.get(_RUN_NAME_PID_ENV) != str(os.getpid()) else None
    name = explicit or inherited
    if not name:
        name = base = f"{pipeline}_{(now or datetime.now()):%Y%m%d_%H%M%S}"
        suffix = 1
        while runs_root is not None and (runs_root / name).exists():
            suffix += 1
            name = f"{base}_{suffix}"
    os.environ[RUN_NAME_ENV] = name
    os.environ[_RUN_NAME_PID_ENV] = str(os.getpid())
    return name


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


def runs_folder(trainer_cfg: Namespace) -> Path:
    """The folder that holds run directories: ``trainer.default_root_dir``, else ``runs``."""
    return Path(trainer_cfg.get("default_root_dir") or DEFAULT_RUNS_DIR)


def apply_run_layout(trainer_cfg: Namespace, run_name: str, pipeline: str) -> Path:
    """Point the trainer, its loggers and its checkpoint callbacks at the run directory.

    Args:
        trainer_cfg: The ``trainer`` section of the parsed config, changed in place.
        run_name: Name of the run, used as directory name and as run name in every tracker.
        pipeline: Pipeline name, used as MLflow experiment and W&B project when those are unset.

    Returns:
        The run directory.
    """
    root = runs_folder(trainer_cfg)
    run_dir = root if root.name == run_name else root / run_name
    trainer_cfg.default_root_dir = str(run_dir)

    for item in _items(trainer_cfg.get("logger")):
        args = item.get("init_args") or Namespace()
        item.init_args = args
        if _is(item, TensorBoardLogger) or _is(item, CSVLogger):
            if args.get("name", "lightning_logs") == "lightning_logs" and args.get("version") is None:
                args.save_dir, args.name, args.version = str(run_dir.parent), run_dir.name, ""
        elif _is(item, MLFlowLogger):
            _fill(args, "experiment_name", "lightning_logs", pipeline)
            _fill(args, "run_name", None, run_name)
        elif _is(item, WandbLogger):
            _fill(args, "name", None, run_name)
            _fill(args, "save_dir", ".", str(run_dir.resolve()))  # a shared wandb-core has its own cwd
            _fill(args, "project", None, os.environ.get("WANDB_PROJECT") or f"harvest-{pipeline}")
            if not args.get("log_model"):
                _fill(args, "offline", False, wandb_offline_by_default())  # no API key: offline

    for item in _items(trainer_cfg.get("callbacks")):
        if _is(item, ModelCheckpoint):
            item.init_args = item.get("init_args") or Namespace()
            _fill(item.init_args, "dirpath", None, str(run_dir / "checkpoints"))
    return run_dir


def resolve_precision(trainer_cfg: Namespace) -> None:
    """Run an autocast precision this machine cannot run fast as ``32-true``, saying so once.

    The same config then runs on a laptop CPU and on a GPU node; ``harvest.precision`` decides.
    """
    precision, message = resolve(trainer_cfg.get("precision"), trainer_cfg.get("accelerator"))
    if message:
        if rank_zero_only.rank == 0:
            log.warning(message)
        trainer_cfg.precision = precision
