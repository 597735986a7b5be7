"""Print what a run produced: a results table and where its outputs are."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from rich.table import Table

from harvest.core.console import console as output_console
from harvest.runs.directory import logged_values
from harvest.tracking.context import run_dir


class RunReport(Callback):
    """At the end of ``fit`` and ``test``, print a table of chosen metrics and the run's locations.

    A metric named ``<row>/<column>`` is shown in row ``<row>``, column ``<column>``, so
    ``label_spreading/test_accuracy`` and ``label_spreading/f1_score`` share a row, and per-class
    metrics ``<row>/<class>/<column>`` get a row per class (``val_segm/apple``).

    Args:
        metrics: Metric names or glob patterns, e.g. ``["*/test_accuracy", "*/f1_score"]``.
        title: Title of the table.
        row_label: Header of the first column.
        per_class: Patterns of per-class metrics shown in a second table, e.g. ``["cnn_head/*/F1"]``.
        per_class_title: Title of that table.
    """

    def __init__(
        self,
        metrics: list[str],
        title: str = "Results",
        row_label: str = "",
        per_class: list[str] | None = None,
        per_class_title: str = "Per class",
    ) -> None:
        self.metrics = metrics
        self.title = title
        self.row_label = row_label
        self.per_class = list(per_class or [])
        self.per_class_title = per_class_title
        self.console = output_console()

    def table(
        self, metrics: dict[str, float | None], patterns: list[str] | None = None, title: str | None = None
    ) -> Table | None:
        """The results table of ``metrics`` matching ``patterns`` (default: ``metrics``), or ``None``."""
        cells: dict[str, dict[str, float | None]] = {}
        columns: list[str] = []
        for pattern in self.metrics if patterns is None else patterns:
            for name in sorted(n for n in metrics if fnmatch(n, pattern)):
                row, _, column = name.rpartition("/")
                cells.setdefault(row, {})[column] = metrics[name]
                if column not in columns:
                    columns.append(column)
        if not cells:
            return None
        table = Table(title=title or self.title)
        table.add_column(self.row_label)
        for column in columns:
            table.add_column(column, justify="right")
        for row, values in cells.items():
            table.add_row(row, *("-" if values.get(c) is None else f"{values[c]:.4f}" for c in columns))
        return table

    @staticmethod
    def locations(trainer: pl.Trainer) -> list[str]:
        """One line per place where this run's outputs can be found."""
        lines = [f"run directory: {run_dir(trainer)}"]
        best = getattr(trainer.checkpoint_callback, "best_model_path", "")
        if best:
            lines.append(f"best checkpoint: {best}")
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                lines.append(f"TensorBoard: tensorboard --logdir {Path(logger.log_dir).parent}")
            elif isinstance(logger, MLFlowLogger):
                uri = logger.experiment.tracking_uri
                experiment = logger.experiment.get_experiment(logger.experiment_id).name
                lines.append(
                    f"MLflow: run {logger.run_id} in experiment '{experiment}' (mlflow ui --backend-store-uri {uri})"
                )
            elif isinstance(logger, WandbLogger):
                lines.append(f"W&B: {logger.experiment.dir}")
        return lines

    @rank_zero_only
    def _report(self, trainer: pl.Trainer) -> None:
        values = logged_values(trainer)
        tables = [self.table(values)]
        if self.per_class:
            tables.append(self.table(values, self.per_class, self.per_class_title))
        for table in tables:
            if table is not None:
                self.console.print(table)
        for line in self.locations(trainer):
            self.console.print(line, highlight=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report(trainer)
