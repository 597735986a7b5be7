"""Learning-rate schedules stepped per optimizer step, and building one from the config."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up, then cosine decay: the schedule of torchvision's detection references.

    Each parameter group follows the schedule from its own initial learning rate, so learning-rate
    multipliers set per group are kept.

    Args:
        optimizer: The optimizer.
        total_steps: Length of the schedule in optimizer steps; left unset, the LightningModule fills in the
            run's length (``trainer.estimated_stepping_batches``).
        warmup_steps: Steps of linear warm-up.
        warmup_fraction: Warm-up as a share of ``total_steps`` when that is longer than ``warmup_steps``
            (``1 / max_epochs``: one epoch).
        warmup_factor: Learning rate at step 0, as a fraction of the initial learning rate.
        min_lr_ratio: Learning rate at the end of the cosine, as a fraction of the initial one.
        last_epoch: Index of the last step, to resume (``-1``: start).

    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | None = None,
        warmup_steps: int = 0,
        warmup_fraction: float = 0.0,
        warmup_factor: float = 0.001,
        min_lr_ratio: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps is None or total_steps < 1:
            raise ValueError(f"WarmupCosineLR needs total_steps >= 1, got {total_steps}.")
        self.total_steps = int(total_steps)
        warmup_steps = max(int(warmup_steps), round(self.total_steps * warmup_fraction))
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps))
        self.warmup_factor = warmup_factor
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, last_epoch)

    def factor(self, step: int) -> float:
        """Multiplier of the initial learning rate at ``step``."""
        if step < self.warmup_steps:
            alpha = step / self.warmup_steps
            return self.warmup_factor * (1 - alpha) + alpha
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        """Learning rate of each parameter group at the current step."""
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


def build_scheduler(
    factory: Callable[..., LRScheduler], optimizer: Optimizer, total_steps: int
) -> LRScheduler:
    """Call a configured scheduler factory, giving it ``total_steps`` when it takes one that was left unset.

    Works for :class:`WarmupCosineLR` and torch's ``OneCycleLR`` as injected by LightningCLI
    (a ``functools.partial`` holding the configured arguments) or given as a class.
    """
    if isinstance(factory, partial):
        needs_length = "total_steps" in factory.keywords and factory.keywords["total_steps"] is None
    else:
        parameters = inspect.signature(factory).parameters
        needs_length = "total_steps" in parameters and parameters["total_steps"].default is None
    return factory(optimizer, total_steps=total_steps) if needs_length else factory(optimizer)
