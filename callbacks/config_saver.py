"""Save the resolved CLI config into the run directory, whatever loggers are attached."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback

from harvest.runs.directory import run_dir


class RunConfigSaver(SaveConfigCallback):
    """Write ``<run dir>/config.yaml``: the config as given, without the directories the CLI chose.

    ``HarvestCLI`` hands it the config with ``run_name``, ``default_root_dir`` and checkpoint
    folders as the user set them (usually unset) and ``origin_run`` naming this run, so
    ``harvest fit --config runs/<run>/config.yaml`` starts a new run that records where it came from.

    Lightning's own callback writes into the first logger's ``log_dir``, which differs per logger
    (and is missing for MLflow on a database store). Tracker callbacks read this file at
    ``on_fit_start`` to send the whole resolved config to their tracker.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            folder = run_dir(trainer)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(folder / self.config_filename),
                skip_none=False,
                overwrite=True,
                multifile=self.multifile,
            )
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)
