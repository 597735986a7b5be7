"""Export a sweep to W&B: a sweep config whose agents run the same ``harvest fit`` as the Optuna trials."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from harvest.core.imports import require
from harvest.sweeps.keys import plain
from harvest.sweeps.schema import validate_sweep_config
from harvest.sweeps.space import SweepSpec
from harvest.tracking.context import wandb_server_unreachable

log = logging.getLogger(__name__)

WANDB_PRESET = Path("configs") / "loggers" / "wandb.yaml"
_REGISTRY = "ModelRegistryUpload"
_WANDB_LOGGER = "WandbLogger"


def _class_names(items: Any) -> list[str]:
    items = items if isinstance(items, list) else [items]
    return [str(i.get("class_path", "")).rsplit(".", 1)[-1] for i in (plain(x) for x in items) if isinstance(i, dict)]


def wandb_preset() -> str:
    """The W&B logger preset, as a path an agent started in the project folder reads."""
    if WANDB_PRESET.is_file():
        return str(WANDB_PRESET)
    return str(Path(__file__).resolve().parents[2] / WANDB_PRESET)


def agent_command(configs: list[str], extra: list[str], config: Namespace) -> list[str]:
    """``harvest fit`` as every W&B agent runs it: the recipe, the W&B logger, no registry, the fixed overrides.

    The W&B logger preset is added when the recipe logs elsewhere (an agent must report to W&B);
    registry callbacks are taken out with an explicit callback list (the sweep registers its best
    run once, not every agent run).
    """
    command = ["harvest", "fit", *(a for c in configs for a in ("--config", c))]
    if _WANDB_LOGGER not in _class_names(config.get("trainer.logger") or []):
        command += ["--config", wandb_preset()]
    callbacks = plain(config.get("trainer.callbacks") or [])
    kept = [c for c in callbacks if _class_names(c) != [_REGISTRY]]
    if len(kept) != len(callbacks):
        command.append("--trainer.callbacks=" + json.dumps(kept, separators=(",", ":")))
    return command + list(extra)


def export_wandb(
    spec: SweepSpec, configs: list[str], extra: list[str], config: Namespace, out_dir: Path, project: str | None
) -> Path:
    """Write the W&B sweep config (checked against W&B's schema); create the sweep when W&B is online."""
    sweep = spec.wandb_config(agent_command(configs, extra, config))
    path = out_dir / "wandb_sweep.yaml"
    validate_sweep_config(sweep, path)
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    if wandb_server_unreachable():
        log.warning(
            "W&B sweeps need the W&B server and W&B is offline here: wrote %s; once online run "
            "`wandb sweep %s` and then `wandb agent <sweep id>` (or run `harvest sweep` without --backend wandb "
            "to sweep locally with Optuna).",
            path,
            path,
        )
        return path
    require("wandb", "harvest sweep --backend wandb")
    import wandb

    sweep_id = wandb.sweep(sweep=sweep, project=project)
    log.info("created W&B sweep %s; start agents with: wandb agent %s", sweep_id, sweep_id)
    return path
