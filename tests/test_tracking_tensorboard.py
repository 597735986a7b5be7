"""TensorBoardTracking's options on a toy model, and every tracker callback as a no-op without its logger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import clear_run_name
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from toy_lightning import QUIET_ARGS, ToyModel

from harvest.commands.main import cli_main

TOY = ["--model", "test_tracking_tensorboard.GraphToy", "--data", "toy_lightning.ToyData"]
QUIET = QUIET_ARGS
TRACKERS = [
    "TensorBoardTracking",
    "MLflowTracking",
    "WandbTracking",
    "DatasetCard",
    "ConfusionMatrix",
    "CheckpointArtifacts",
]


class GraphToy(ToyModel):
    """The toy classifier with a ``forward``, so its graph can be traced."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(autouse=True)
def _isolated(in_tmp: Path) -> None:
    clear_run_name()


def test_histograms_and_graph_on_request(in_tmp: Path) -> None:
    tensorboard = ["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "runs"]
    options = [
        "--trainer.callbacks+",
        "TensorBoardTracking",
        "--trainer.callbacks.histograms",
        "true",
        "--trainer.callbacks.graph",
        "true",
    ]
    cli = cli_main(["fit", *TOY, *QUIET, "--trainer.max_epochs", "2", *tensorboard, *options])

    events = EventAccumulator(cli.trainer.default_root_dir, size_guidance={"histograms": 0}).Reload()
    histograms = events.Tags()["histograms"]
    assert {"weights/net.weight", "weights/net.bias", "gradients/net.weight"} <= set(histograms)
    assert (
        len(events.Histograms("weights/net.weight")) == 2
        and len(events.Histograms("gradients/net.weight")) == 2
    )
    assert events.Tags()["graph"] and "net" in str(events.Graph())


def test_every_tracker_callback_is_a_no_op_without_loggers(in_tmp: Path) -> None:
    callbacks = [arg for name in TRACKERS for arg in ("--trainer.callbacks+", name)]
    cli = cli_main(
        ["fit", *TOY, *QUIET, "--trainer.max_epochs", "1", "--trainer.logger", "false", *callbacks]
    )
    run_dir = Path(cli.trainer.default_root_dir)
    # no describe() on ToyData: no card; no ssl_results on ToyModel: no matrices; no logger: no tracker files
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoints", "config.yaml", "run.json"]  # run.json: git
    assert not Path("mlflow.db").exists() and not Path("wandb").exists()


def test_hparams_hold_the_resolved_config(in_tmp: Path) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    tensorboard = ["--trainer.logger", "TensorBoardLogger", "--trainer.logger.save_dir", "runs"]
    cli = cli_main(
        [
            "fit",
            *TOY,
            *QUIET,
            "--trainer.max_epochs",
            "1",
            "--model.lr",
            "0.25",
            *tensorboard,
            "--trainer.callbacks+",
            "TensorBoardTracking",
        ]
    )
    events = EventAccumulator(cli.trainer.default_root_dir).Reload()
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["model.init_args.lr"].number_value == 0.25
    assert hparams["model.class_path"].string_value == "test_tracking_tensorboard.GraphToy"
    assert not [k for k in hparams if k.startswith("trainer.callbacks")]  # callbacks: in config.yaml only
    saved = json.dumps(sorted(hparams))
    assert "trainer.logger.TensorBoardLogger.init_args.sub_dir" not in saved  # None values are left out
