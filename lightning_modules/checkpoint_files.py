"""Reading and amending checkpoint files a ``ModelCheckpoint`` wrote (weights-only loads, atomic rewrites)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch


def checkpoint_paths(trainer: pl.Trainer) -> tuple[Path | None, Path | None]:
    """Return the best and the last checkpoint files of the checkpoint callback (``None`` when absent)."""
    callback = trainer.checkpoint_callback
    found = []
    for attribute in ("best_model_path", "last_model_path"):
        path = Path(getattr(callback, attribute, "") or "")
        found.append(path if path.is_file() else None)
    return found[0], found[1]


def amend_checkpoints(paths: list[Path], update: Callable[[dict[str, Any]], None]) -> list[Path]:
    """Apply ``update`` to the first checkpoint and to the others saved at the same global step.

    Each file is loaded with ``weights_only=True``, updated and written back atomically.

    Returns:
        The files that were rewritten.

    """
    step, amended = None, []
    for path in dict.fromkeys(paths):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        step = checkpoint.get("global_step") if step is None else step
        if checkpoint.get("global_step") == step:
            update(checkpoint)
            partial = path.with_name(path.name + ".partial")
            torch.save(checkpoint, partial)
            os.replace(partial, path)
            amended.append(path)
    return amended
