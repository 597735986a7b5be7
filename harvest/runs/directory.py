"""The run directory: its name, its layout, creating it atomically and reading it back.

One module owns the run directory; every callback, data module, the registry and the CLI ask it.
It sits at the bottom of the dependency graph (it imports no other Harvest module).

A training run lives in ``<root>/<run name>/`` (``root`` is ``trainer.default_root_dir`` as the
user gave it, else ``runs``)::

    config.yaml             the resolved config; rerunning it starts a new run (origin_run names this one)
    training_summary.json   status, history (each epoch once), best/last checkpoint, git commit
    run.json                the run it was rerun from, its MLflow and W&B run ids (a resume continues them)
    checkpoints/            best-*.ckpt and last.ckpt (the last completed epoch, or the preempted step)
    plots/, events.out.tfevents.*, dataset_card.json, data_split.json, ...
    stages/<stage>_<time>/  one folder per validate/test/predict of this run's checkpoints

A ``validate``/``test``/``predict`` of a checkpoint that belongs to no run directory gets a run
directory of its own, ``<root>/<pipeline>_<stage>_<time>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from jsonargparse.typing import import_object  # type: ignore[attr-defined]
from lightning.fabric.plugins.environments import SLURMEnvironment

DEFAULT_RUNS_DIR = "runs"
CONFIG_FILENAME = "config.yaml"
SUMMARY_FILENAME = "training_summary.json"
RUN_RECORD = "run.json"
CHECKPOINTS = "checkpoints"
PLOTS = "plots"
STAGES = "stages"
#: Environment variables of the launchers whose ranks are not children of one process, in order.
_SLURM_JOB = ("SLURM_ARRAY_JOB_ID", "SLURM_JOB_ID")
_TORCHRUN_JOB = "TORCHELASTIC_RUN_ID"


# ---------------------------------------------------------------------- values and files
def pipeline_name(data_cfg: Any) -> str:
    """The ``pipeline`` class attribute of the configured data module, else its class name in snake case."""
    class_path = getattr(data_cfg, "class_path", None)
    if not class_path:
        return "harvest"
    cls = import_object(class_path)
    return getattr(cls, "pipeline", None) or re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()


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
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` (``{}`` when the file is missing); one-line ``ValueError`` when it is not JSON."""
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete the file.") from err
    return value if isinstance(value, dict) else {}


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------- where a trainer writes
def run_dir(trainer: pl.Trainer) -> Path:
    """The folder this trainer writes into: the training run, or a stage folder of one (laid out by the CLI)."""
    return Path(trainer.default_root_dir)


def training_run_of(folder: Path) -> Path:
    """The training run a folder belongs to: itself, or the run above a ``stages/<stage>_<time>`` folder."""
    folder = Path(folder)
    return folder.parent.parent if folder.parent.name == STAGES else folder


def is_stage_dir(folder: Path) -> bool:
    """Whether ``folder`` is a ``stages/<stage>_<time>`` folder of a training run."""
    return Path(folder).parent.name == STAGES


def is_run_dir(folder: Path) -> bool:
    """Whether ``folder`` holds a run (its config or its summary)."""
    folder = Path(folder)
    return (folder / CONFIG_FILENAME).is_file() or (folder / SUMMARY_FILENAME).is_file()


def run_of_checkpoint(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint file was written into (``<run>/checkpoints/x.ckpt``), else ``None``."""
    path = Path(checkpoint)
    if path.parent.name == CHECKPOINTS and is_run_dir(path.parent.parent):
        return path.parent.parent
    return None


# ---------------------------------------------------------------------- names
def tracker_run_name(folder: Path) -> str:
    """The name trackers show: the run's, or ``<run>/<stage folder>`` for a stage of a run."""
    folder = Path(folder)
    return f"{training_run_of(folder).name}/{folder.name}" if is_stage_dir(folder) else folder.name


def timestamp(now: datetime | None = None) -> str:
    """``YYYYmmdd_HHMMSS`` of ``now``: the time part of generated run names."""
    return f"{(now or datetime.now()):%Y%m%d_%H%M%S}"


def launcher_job_id() -> str | None:
    """The job id shared by every rank of a SLURM or ``torchrun`` job (ranks that are not one process's children)."""
    if SLURMEnvironment.detect():
        array_job = os.environ.get(_SLURM_JOB[0])
        if array_job:
            return f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
        return os.environ.get(_SLURM_JOB[1])
    run_id = os.environ.get(_TORCHRUN_JOB)
    if run_id and run_id.lower() != "none":
        return run_id.replace("-", "")[:12]
    return None


def launcher_rank() -> int:
    """This process's global rank as its launcher set it (0 without a launcher)."""
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def create_unique(parent: Path, base: str) -> Path:
    """Create ``parent/base`` (or ``base_2``, ``base_3``… when taken) atomically and return it.

    ``mkdir`` either creates the folder or fails, so two processes started in the same second
    never get the same folder.
    """
    parent.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        folder = parent / (base if suffix == 1 else f"{base}_{suffix}")
        try:
            folder.mkdir()
        except FileExistsError:
            suffix += 1
            continue
        return folder


def remove_if_empty(folder: Path) -> None:
    """Remove a folder a failed command left with nothing but its ``run.json``, and an emptied ``stages/``."""
    folder = Path(folder)
    if folder.is_dir() and all(p.name == RUN_RECORD for p in folder.iterdir()):
        (folder / RUN_RECORD).unlink(missing_ok=True)
        folder.rmdir()
        if folder.parent.name == STAGES and not any(folder.parent.iterdir()):
            folder.parent.rmdir()


def latest_run(root: Path, pipeline: str) -> Path | None:
    """The most recently changed run directory of ``pipeline`` under ``root`` that holds a last checkpoint."""
    candidates = [
        folder
        for folder in Path(root).glob(f"{pipeline}_*")
        if folder.is_dir() and any((folder / CHECKPOINTS).glob("last*.ckpt"))
    ]
    return max(candidates, key=lambda f: f.stat().st_mtime, default=None)


# ---------------------------------------------------------------------- reading a run back
def read_summary(folder: Path) -> dict[str, Any]:
    """The run's ``training_summary.json`` (``{}`` when there is none)."""
    return read_json(Path(folder) / SUMMARY_FILENAME)


def read_config(folder: Path) -> dict[str, Any]:
    """The run's resolved ``config.yaml`` as a dict (``{}`` when there is none)."""
    import yaml

    path = Path(folder) / CONFIG_FILENAME
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def best_checkpoint(folder: Path) -> Path | None:
    """The checkpoint the run's summary names best (else last, else the newest on disk), found even if the run moved."""
    folder = Path(folder)
    summary = read_summary(folder)
    for key in ("best_checkpoint", "last_checkpoint"):
        if summary.get(key):
            recorded = Path(summary[key])
            for candidate in (folder / CHECKPOINTS / recorded.name, recorded):
                if candidate.is_file():
                    return candidate
    found = sorted((folder / CHECKPOINTS).glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def recorded_git(folder: Path) -> dict[str, str]:
    """``{"commit": sha, "dirty": "true"|"false"}`` as the training run recorded it (``{}`` when it did not)."""
    run = training_run_of(folder)
    return dict(run_record(run).get("git") or read_summary(run).get("git") or {})


def run_record(folder: Path) -> dict[str, Any]:
    """``run.json`` of ``folder``: ``origin_run``, ``mlflow_run_id``, ``wandb_run_id`` (``{}`` when absent)."""
    return read_json(Path(folder) / RUN_RECORD)


def update_run_record(folder: Path, **values: Any) -> None:
    """Add ``values`` to ``run.json`` of ``folder`` (rank zero writes; a resume reads the tracker run ids back)."""
    record = run_record(folder)
    if any(record.get(key) != value for key, value in values.items()):
        write_json_atomic(Path(folder) / RUN_RECORD, {**record, **values})


def checkpoint_problem(path: str | Path, expected_class: str | None = None) -> str | None:
    """Why ``path`` cannot be loaded as a Harvest checkpoint (missing, truncated, not a checkpoint, another model).

    ``None`` when it can. Reads with ``weights_only=True`` and ``mmap`` (tensors stay on disk).

    Args:
        path: The checkpoint file.
        expected_class: Class path of the LightningModule the config builds (``None``: any).
    """
    path = Path(path)
    if not path.is_file():
        return f"checkpoint {path} does not exist"
    if not zipfile.is_zipfile(path):
        with path.open("rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"  # a zip's start without its end: cut short
        if zipped:
            size = path.stat().st_size
            return f"checkpoint {path} is truncated or damaged ({size} bytes): copy it again or use another"
        return f"{path} is not a PyTorch checkpoint (no torch.save archive): give a .ckpt written by harvest fit"
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as err:
        return f"checkpoint {path} cannot be read safely (weights_only=True): {str(err).splitlines()[0]}"
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return f"{path} is not a Lightning checkpoint (no state_dict): give a .ckpt written by harvest fit"
    class_path = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
    expected = (expected_class or "").rsplit(".", 1)[-1]
    if expected and class_path and class_path.rsplit(".", 1)[-1] != expected:
        return (
            f"checkpoint {path} holds a {class_path.rsplit('.', 1)[-1]}, not a {expected}: "
            "use it with the config of the pipeline that trained it"
        )
    return None
