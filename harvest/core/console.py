"""The rich console every Harvest command prints its tables and reports with."""

from __future__ import annotations

import os
import sys

from rich.console import Console

#: Width of tables when the output is not a terminal (a log file, CI); rich would assume 80 columns.
PIPED_WIDTH = 140


def console(stderr: bool = False) -> Console:
    """A console with soft wrapping whose tables get ``PIPED_WIDTH`` columns when output is piped."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, soft_wrap=True, width=PIPED_WIDTH if piped else None)
