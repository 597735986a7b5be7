"""``harvest fit|test`` with the Fuji recipe: what a user sees on disk, in TensorBoard and in MLflow."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, fuji_args
from mlflow.tracking import MlflowClient
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from harvest.commands.main import cli_main
from lightning_modules import MaskRCNNModule

ORCHARD = ["--data.synthetic.train_images=5", "--data.synthetic.val_images=2", "--data.synthetic.width=96",
           "--data.synthetic.height=72"]  # fmt: skip


def test_fast_dev_run_writes_the_configured_synthetic_orchard(
    in_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    said = logging.getLogger("datamodules.fuji_apples")  # Harvest's loggers print to stderr, not to the root
    said.addHandler(caplog.handler)
    try:
        cli = cli_main(["fit", *fuji_args(Path("data/orchard"), *ORCHARD, "--trainer.fast_dev_run", "true")])
    finally:
        said.removeHandler(caplog.handler)
    assert (
        "data.root=data/orchard does not exist: writing the configured synthetic orchard there."
        in caplog.text
    )
    assert (
        len(list((in_tmp / "data/orchard/1-Mask-set/training_images_and_annotations").glob("mask_*.csv")))
        == 5
    )
    metrics = cli.trainer.callback_metrics
    assert {
        "train/loss",
        "val/loss_mask",
        "val/loss_objectness",
        "val_segm/mAP",
        "val_bbox/mAP50",
        "val_segm/F1_50",
    } <= set(metrics)
    assert type(cli.model) is MaskRCNNModule and cli.model.hparams.num_classes == 2  # linked from the data


def test_the_real_recipe_without_data_says_where_fuji_sfm_goes(in_tmp: Path) -> None:
    args = ["fit", "--config", str(CONFIGS / "fuji_maskrcnn.yaml"), "--data.root", "data/none"]
    with pytest.raises(
        FileNotFoundError,
        match=r"data.root=data/none does not exist: download Fuji-SfM .* data/none/1-Mask-set/training_",
    ):
        cli_main([*args, "--model.init_args.weights", "null", "--trainer.logger", "false"])


def test_a_short_fit_then_test(in_tmp: Path, tiny_orchard: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli = cli_main(
        [
            "fit",
            *fuji_args(
                tiny_orchard,
                "--trainer.max_epochs",
                "2",
                "--trainer.log_every_n_steps",
                "1",
                "--trainer.limit_train_batches",
                "2",
                "--run_name",
                "fuji_short",
                "--trainer.callbacks+=ModelCheckpoint",  # every epoch too, as the recipe's header says
                "--trainer.callbacks.save_top_k=-1",
                "--trainer.callbacks.filename={epoch:02d}",
            ),
        ]
    )
    run_dir = in_tmp / "runs" / "fuji_short"
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert (
        summary["status"] == "completed"
        and summary["epochs_trained"] == 2
        and summary["monitor"] == "val_segm/mAP"
    )
    assert [row["epoch"] for row in summary["history"]] == [0, 1] and "val_segm/mAP50" in summary["history"][
        -1
    ]
    assert {"val/loss_classifier", "train/loss_mask_epoch", "val_bbox/precision50"} <= set(
        summary["final_metrics"]
    )
    assert (
        Path(summary["best_checkpoint"]).name.startswith("best-")
        and Path(summary["last_checkpoint"]).is_file()
    )
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints == [
        Path(summary["best_checkpoint"]).name,
        "epoch=00.ckpt",
        "epoch=01.ckpt",
        "last.ckpt",
    ]
    overlay = run_dir / "plots" / "predictions_epoch001.png"  # the last epoch's, though every_n_epochs is 5
    assert Image.open(overlay).size[0] > 96 and not (run_dir / "plots" / "predictions_epoch000.png").exists()
    report = capsys.readouterr().out
    assert "val_segm" in report and "mAP50" in report and "F1_50" in report and "best checkpoint:" in report

    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert len(events.Scalars("val_segm/mAP")) == 2 and events.Scalars("train/loss_mask_step")
    assert events.Images("predictions") and "lr-SGD/mask_head" in events.Tags()["scalars"]

    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("fuji_apples").experiment_id])
    assert (
        run.info.run_name == "fuji_short"
        and len(client.get_metric_history(run.info.run_id, "val_segm/mAP")) == 2
    )
    assert "plots/predictions_epoch001.png" in [
        a.path for a in client.list_artifacts(run.info.run_id, "plots")
    ]
    card = json.loads((run_dir / "dataset_card.json").read_text())  # built on the data module's describe()
    assert card["format"] == "via" and card["splits"]["train"]["per_class"]["apple"] > 0

    model = MaskRCNNModule.load_from_checkpoint(summary["last_checkpoint"], weights_only=True).eval()
    images, _ = next(iter(cli.datamodule.val_dataloader()))
    with torch.no_grad():
        predictions = model.predict_step(images)
    assert len(predictions) == len(images) and predictions[0]["masks"].shape[1:] == images[0].shape[1:]

    tested = cli_main(
        [
            "test",
            *fuji_args(tiny_orchard, "--ckpt_path", summary["last_checkpoint"], "--trainer.logger", "false"),
        ]
    )
    assert {"test_segm/mAP", "test_bbox/mAP50", "test/loss_mask"} <= set(tested.trainer.callback_metrics)
    assert "test_segm" in capsys.readouterr().out
