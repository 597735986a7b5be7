"""Data versioning at the start of ``fit``: the data set's card in the run directory and in every tracker."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from callbacks.logger_media import log_artifact_file, log_image_file
from callbacks.mlflow_tracking import tracker_errors
from callbacks.wandb_tracking import is_offline
from harvest.core.errors import first_line
from harvest.monitoring.dataset_card import build_card, sample_grid, short_hash
from harvest.runs.directory import run_dir, write_json_atomic

log = logging.getLogger(__name__)


def card_markdown(card: dict[str, Any]) -> str:
    """The card's counts as a Markdown table (TensorBoard's Text tab)."""
    splits = card.get("splits", {})
    lines = [
        f"**{card['name']}**: {card['files']} files, content hash `{card['content_hash']}`",
        "",
        "| class | " + " | ".join(splits) + " |",
        "|---|" + "---|" * len(splits),
    ]
    for name in card.get("class_names", []):
        lines.append(
            f"| {name} | "
            + " | ".join(str(s.get("per_class", {}).get(name, 0)) for s in splits.values())
            + " |"
        )
    return "\n".join(lines)


class DatasetCard(Callback):
    """Describe and version the data set when ``fit`` starts (rank zero).

    Needs a data module with the Harvest data contract (``describe``, ``dataset_files``,
    ``sample_images``); says so once and does nothing otherwise. Writes ``dataset_card.json`` (content
    hash over every image and annotation file, per-split and per-class counts, class imbalance, plus
    what the module describes: labeled/unlabeled split, instance counts, mask areas) and
    ``plots/dataset_samples.png`` (sample images per class) into the run directory, then sends them:

    - W&B: an Artifact of type ``dataset`` named after the data set, the card as metadata, versioned
      by content (the same data is the same version), aliased ``hash-<12 hex digits>``; used by the
      run as its input (lineage), or logged by it when offline (W&B cannot mark inputs offline).
    - MLflow: a dataset input (digest = the content hash's first 32 hex digits, profile = the counts,
      context ``train``), the tags ``dataset`` and ``dataset_hash``, and both files as artifacts.
    - TensorBoard: the counts as text and the sample grid as an image.

    Args:
        samples_per_class: Sample thumbnails per class in the grid.
        artifact_name: W&B artifact name (default: the data set's name).
        filename: Card file in the run directory.

    """

    def __init__(
        self,
        samples_per_class: int = 4,
        artifact_name: str | None = None,
        filename: str = "dataset_card.json",
    ) -> None:
        self.samples_per_class = samples_per_class
        self.artifact_name = artifact_name
        self.filename = filename
        self.card: dict[str, Any] | None = None

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not all(hasattr(datamodule, name) for name in ("describe", "dataset_files", "sample_images")):
            log.warning(
                "DatasetCard: %s has no describe()/dataset_files()/sample_images(); no card written.",
                type(datamodule).__name__,
            )
            return
        started = time.perf_counter()
        self.card = card = build_card(datamodule)
        folder = run_dir(trainer)
        card_path = folder / self.filename
        write_json_atomic(card_path, card)
        grid = sample_grid(
            datamodule.sample_images(self.samples_per_class), folder / "plots" / "dataset_samples.png"
        )
        log.info(
            "Data set %s: %d files, content hash %s (card in %.1f s: %s)",
            card["name"],
            card["files"],
            short_hash(card),
            time.perf_counter() - started,
            card_path,
        )
        log_image_file(trainer, "dataset/samples", grid)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("dataset/card", card_markdown(card), trainer.global_step)
            elif isinstance(logger, MLFlowLogger):
                self._mlflow(trainer, logger, card, card_path)
            elif isinstance(logger, WandbLogger):
                self._wandb(logger, card, grid)

    def _mlflow(
        self, trainer: pl.Trainer, logger: MLFlowLogger, card: dict[str, Any], card_path: Path
    ) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag, RunTag

        profile = {
            k: card[k] for k in ("files", "bytes", "num_classes", "class_imbalance", "splits") if k in card
        }
        source = json.dumps({"uri": Path(card.get("root", ".")).resolve().as_uri()})
        dataset = Dataset(
            card["name"], card["content_hash"][:32], "local", source, profile=json.dumps(profile)
        )
        try:
            client = logger.experiment
            client.log_inputs(
                logger.run_id,
                datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")])],
            )
            tags = [RunTag("dataset", card["name"]), RunTag("dataset_hash", card["content_hash"])]
            client.log_batch(logger.run_id, tags=tags, synchronous=False)
        except tracker_errors() as error:
            log.warning(
                "MLflow: could not record the data set (%s); the card stays in %s.",
                first_line(error),
                card_path,
            )
            return
        log_artifact_file(trainer, logger, card_path)

    def _wandb(self, logger: WandbLogger, card: dict[str, Any], grid: Path) -> None:
        artifact = dataset_artifact(card, grid, self.artifact_name)
        run = logger.experiment
        dataset = {"name": card["name"], "content_hash": card["content_hash"]}
        run.config.update({"dataset": dataset}, allow_val_change=True)
        aliases = [f"hash-{short_hash(card)}"]
        if is_offline(run):
            run.log_artifact(artifact, aliases=aliases)
        else:
            run.use_artifact(artifact, aliases=aliases)


def dataset_artifact(card: dict[str, Any], grid: Path, name: str | None = None) -> Any:
    """The W&B ``dataset`` artifact of a card: its files depend on the data only, not on where it lies.

    The card without its ``root`` and the sample grid are the files (W&B versions by their digest,
    so the same data is the same version); the whole card, ``root`` included, is the metadata.
    """
    import wandb

    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", name or card["name"]).strip("-") or "dataset"
    description = f"{card['name']}: {card['files']} files, content hash {card['content_hash']}"
    artifact = wandb.Artifact(name, type="dataset", description=description, metadata=card)
    with artifact.new_file("dataset_card.json") as handle:
        json.dump({k: v for k, v in card.items() if k != "root"}, handle, indent=2)
    artifact.add_file(str(grid), name="dataset_samples.png")
    return artifact
