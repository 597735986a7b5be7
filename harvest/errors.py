"""Errors shown to users: one line each."""

from __future__ import annotations

import os
import signal

from lightning.pytorch.utilities.exceptions import SIGTERMException


def first_line(error: BaseException | str, limit: int = 300) -> str:
    """The first line of an error's message (at most ``limit`` characters), or its type when it has none."""
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0][:limit]


class RunInterrupted(Exception):  # noqa: N818 - what happened to the run, not a programming error
    """A run stopped by a signal (SIGTERM, SIGINT, SIGUSR1) after saving a resumable checkpoint.

    Args:
        signum: The signal received.
        checkpoint: The checkpoint saved for the resume (``None`` when none could be saved).
        run_dir: The run directory.
    """

    def __init__(self, signum: int, checkpoint: str | None, run_dir: str) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        name = signal.Signals(self.signum).name
        saved = f"saved {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(
            f"{name} received: {saved}; resume with `harvest fit <same arguments> --run_name "
            f"{os.path.basename(run_dir)} --ckpt_path last`"
        )

    @property
    def exit_code(self) -> int:
        """The shell's status for a process ended by this signal (128 + signal number)."""
        return 128 + self.signum


#: Exceptions that stop a run from outside (a signal), not a failure: the run is ``interrupted`` and resumable.
INTERRUPTIONS: tuple[type[BaseException], ...] = (RunInterrupted, KeyboardInterrupt, SIGTERMException)
