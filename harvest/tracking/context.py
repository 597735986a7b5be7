"""What every tracker callback needs to know about a run: its resolved config, its code version, its name.

Logger-specific calls live in the callbacks (``callbacks/*_tracking.py``); this module only reads
the run directory, the git checkout and the environment, so the CLI and the callbacks share it.
"""

from __future__ import annotations

import json
import logging
import netrc
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import lightning.pytorch as pl

import harvest
from harvest.runs.directory import CONFIG_FILENAME, read_config, run_dir, tracker_run_name

log = logging.getLogger(__name__)

Scalar = bool | int | float | str


def run_name(trainer: pl.Trainer) -> str:
    """The run's name in every tracker: the run directory's, ``<run>/<stage folder>`` for a stage."""
    return tracker_run_name(run_dir(trainer))


def pipeline(trainer: pl.Trainer) -> str | None:
    """The ``pipeline`` attribute of the attached data module, if any."""
    return getattr(trainer.datamodule, "pipeline", None)


def loggers_of(trainer: pl.Trainer, cls: type) -> list[Any]:
    """The attached loggers that are instances of ``cls`` (none under ``fast_dev_run``)."""
    return [logger for logger in trainer.loggers if isinstance(logger, cls)]


def run_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The resolved CLI config of this run (``<run dir>/config.yaml``), or ``None`` outside the CLI."""
    if not (run_dir(trainer) / CONFIG_FILENAME).is_file():
        return None
    config = read_config(run_dir(trainer))
    config["run_name"] = run_name(trainer)  # the file pins no name (a rerun is a new run); trackers show this one's
    return config


def tracked_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that trackers record as parameters: everything a person tunes.

    The callbacks list is left out (checkpoint file patterns, progress-bar colours, tracker switches:
    67 entries in a recipe); the whole resolved config is the run's ``config.yaml`` artifact. MLflow
    params and TensorBoard's HParams are :func:`flatten` of this, W&B's config is this nested (W&B
    shows it with the same dotted keys).
    """
    trainer = {k: v for k, v in (config.get("trainer") or {}).items() if k != "callbacks"}
    return {**config, "trainer": trainer} if "trainer" in config else dict(config)


def tracked_params(config: dict[str, Any]) -> dict[str, Scalar]:
    """:func:`tracked_config` flattened: one name per value, the keys of MLflow params and HParams."""
    return flatten(tracked_config(config))


def _segment(item: Any, index: int, taken: set[str]) -> str:
    name = (
        str(item["class_path"]).rsplit(".", 1)[-1]
        if isinstance(item, dict) and "class_path" in item
        else str(index)
    )
    return name if name not in taken else f"{name}_{index}"


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """A nested config as ``{"model.init_args.lr": 0.001, ...}`` with plain scalar values.

    Lists of ``class_path`` dicts (callbacks, loggers) are keyed by class name, so adding a
    callback does not renumber the others; other lists become JSON strings; ``None`` values (unset
    options) are left out.
    """
    flat: dict[str, Scalar] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            taken: set[str] = set()
            for index, item in enumerate(value):
                segment = _segment(item, index, taken)
                taken.add(segment)
                flat.update(flatten(item, f"{name}.{segment}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = json.dumps(value, default=str)
    return flat


def git_info() -> dict[str, str]:
    """``{"commit": sha, "dirty": "true"|"false"}`` of the checkout of Harvest's code, else of the cwd.

    Empty without git or outside a checkout.
    """
    for folder in (Path(harvest.__file__).resolve().parent.parent, Path.cwd()):
        try:
            commit = subprocess.run(
                ["git", "-C", str(folder), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            status = subprocess.run(
                ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        return {"commit": commit, "dirty": str(bool(status)).lower()}
    return {}


def wandb_api_key_available() -> bool:
    """Whether W&B finds credentials: ``WANDB_API_KEY``, an identity token file, or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_server_unreachable() -> str | None:
    """Why nothing can be sent to the W&B server now (``WANDB_MODE`` offline, no API key), else ``None``.

    For what needs the server itself (Registry links, sweeps); runs log offline and sync later.
    """
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    if not wandb_api_key_available():
        return "no W&B API key is configured"
    return None


def wandb_offline_by_default() -> bool:
    """W&B runs offline when no API key is set, unless ``WANDB_MODE`` says otherwise."""
    return not os.environ.get("WANDB_MODE") and not wandb_api_key_available()


def server_problem(uri: str, timeout: float) -> str | None:
    """Why the MLflow server at ``uri`` cannot be reached; ``None`` if it answers or is not a server."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # it answered; routing of /health is the server's business
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
