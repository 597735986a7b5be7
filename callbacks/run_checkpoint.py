"""Checkpoints a run can always resume from: a true ``last.ckpt``, the random state, a save on preemption."""

from __future__ import annotations

import logging
import random
import signal
import threading
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint

from harvest.core.errors import RunInterrupted
from harvest.runs.directory import run_dir

log = logging.getLogger(__name__)

#: Signals that stop a run with a resumable checkpoint: schedulers (SIGTERM), Ctrl+C, SLURM's warning signal.
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def random_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python random states, in types a ``weights_only`` load accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state: dict[str, Any]) -> None:
    """Restore what :func:`random_state` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` a run can always resume from, exactly.

    Lightning 2.6's ``ModelCheckpoint(monitor=..., save_last=True)`` rewrites ``last.ckpt`` only
    when it also saved a top-k checkpoint, i.e. when the monitored metric improved. This one also
    writes ``last.ckpt`` at every other epoch end (and every ``last_every_n_train_steps`` steps
    when set, for long epochs), so it always holds the last completed epoch.

    Every checkpoint it writes carries the random states (torch, CUDA, numpy, Python) of the moment
    it was written; a run resumed from it restores them before its first epoch draws its shuffle
    (after the sanity check), so a deterministic run resumed at an epoch boundary shuffles,
    augments and ends as the uninterrupted run does.

    Preemption: during training, SIGTERM, SIGINT (Ctrl+C; a second one stops at once) and SIGUSR1
    (unless Lightning's SLURM auto-requeue handles it) make the run save ``last.ckpt`` at the end
    of the current step and stop with :class:`harvest.core.errors.RunInterrupted`: the summary says
    ``interrupted``, trackers close their runs as killed, ``harvest`` exits with 128 + the signal
    number, and ``harvest fit ... --run_name <run> --ckpt_path last`` resumes. All ranks of a
    multi-process job stop at the same step.

    Args:
        last_every_n_train_steps: Also rewrite ``last.ckpt`` every N training steps (0: epoch ends only).
        **kwargs: ``ModelCheckpoint``'s arguments.
    """

    def __init__(self, last_every_n_train_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_every_n_train_steps = last_every_n_train_steps
        self._random_state: dict[str, Any] | None = None
        self._signal: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None

    # ------------------------------------------------------------------ a true last checkpoint
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        """Write ``last.ckpt`` unless this step's checkpoint was already written (skip rules of the parent)."""
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # ------------------------------------------------------------------ random state
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "random_state": random_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._random_state = state_dict.get("random_state")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_random_state()

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_random_state()  # the sanity check drew from the generators; the epoch must not see it

    def _restore_random_state(self) -> None:
        # A resumed fit draws the first epoch's shuffle when its training loop starts, after the sanity
        # check and before any epoch hook: restored here, the generators are where they were at the save.
        if self._random_state is not None:
            set_random_state(self._random_state)

    # ------------------------------------------------------------------ preemption
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning registered its own handlers (in Trainer._run), which it restores at teardown
        self._random_state = None
        self._trainer, self._signal = trainer, None
        if threading.current_thread() is not threading.main_thread():
            return
        environment = trainer._accelerator_connector.cluster_environment
        slurm_requeue = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        for signum in PREEMPTION_SIGNALS:
            if signum == signal.SIGUSR1 and slurm_requeue:
                continue  # Lightning saves an hpc checkpoint and requeues; SLURM's SIGTERM follows
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        first = self._signal is None
        self._signal = signum
        if first:
            log.warning(
                "%s received: saving a checkpoint at the end of this step, then stopping "
                "(Ctrl+C again stops at once).",
                signal.Signals(signum).name,
            )
            kill = getattr(getattr(self._trainer, "strategy", None) and self._trainer.strategy.launcher, "kill", None)
            if callable(kill):
                kill(signum)  # ranks this process started stop too

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        stop = self._signal is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self._stop(trainer)
        n = self.last_every_n_train_steps
        if n and self.save_last and trainer.global_step % n == 0:
            self._save_last_now(trainer)

    def _stop(self, trainer: pl.Trainer) -> None:
        filepath = self.format_checkpoint_name(self._monitor_candidates(trainer), self.CHECKPOINT_NAME_LAST)
        self.last_model_path = filepath
        self._save_checkpoint(trainer, filepath)
        self._restore_handlers()
        raise RunInterrupted(self._signal or signal.SIGTERM, filepath, str(run_dir(trainer)))

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore_handlers()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_handlers()
