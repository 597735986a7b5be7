"""One ``harvest fit`` of the grocery demo with TensorBoard, W&B offline, MLflow on a real server, read back.

The SQLite side of MLflow is read back from the shared ``grocery_run`` (the recipe's own
TensorBoard + MLflow-on-SQLite loggers), so both stores are covered without a third run.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CONFIGS, REPO, GroceryRun, clear_run_name, groceries_args
from mlflow import MlflowClient
from mlflow.artifacts import download_artifacts
from mlflow_server import MlflowServer
from sklearn.metrics import precision_recall_fscore_support
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from wandb_records import OfflineRun

from harvest.commands.main import cli_main
from harvest.runs.directory import sha256_file

ALGORITHMS = ("label_propagation", "label_spreading", "self_training")
RUN_NAME = re.compile(r"^groceries_ssl_\d{8}_\d{6}(_\d+)?$")


class Lines(logging.Handler):
    """Collects the messages of Harvest's loggers."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class AllLoggersRun:
    run_dir: Path
    summary: dict[str, Any]
    card: dict[str, Any]
    uri: str
    lines: list[str]


@pytest.fixture(scope="module")
def all_loggers_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_groceries: Path, mlflow_server: MlflowServer
) -> Iterator[AllLoggersRun]:
    workdir = tmp_path_factory.mktemp("all_loggers")
    handler = Lines()
    logging.getLogger("callbacks").addHandler(handler)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        patch.setenv("HOME", str(workdir))  # no ~/.netrc: W&B has no API key and goes offline on its own
        for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT"):
            patch.delenv(name, raising=False)
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(workdir / name.lower()))
        clear_run_name()
        extra = [
            "--config",
            str(CONFIGS / "loggers" / "all.yaml"),
            "--trainer.logger.tracking_uri",
            mlflow_server.uri,
        ]
        cli = cli_main(["fit", *groceries_args(tiny_groceries, "--trainer.max_epochs", "1", *extra)])
        clear_run_name()
    logging.getLogger("callbacks").removeHandler(handler)
    run_dir = workdir / cli.trainer.default_root_dir
    yield AllLoggersRun(
        run_dir=run_dir,
        summary=json.loads((run_dir / "training_summary.json").read_text()),
        card=json.loads((run_dir / "dataset_card.json").read_text()),
        uri=mlflow_server.uri,
        lines=handler.lines,
    )


def _hparams(run_dir: Path) -> dict[str, Any]:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    content = events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value or v.bool_value for k, v in start.hparams.items()}


def _mlflow_run(client: MlflowClient, run_name: str) -> Any:
    (run,) = client.search_runs(
        [client.get_experiment_by_name("groceries_ssl").experiment_id], f"attributes.run_name = '{run_name}'"
    )
    return run


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def _check_mlflow(uri: str, run_dir: Path, summary: dict[str, Any], card: dict[str, Any]) -> None:
    client = MlflowClient(uri)
    run = _mlflow_run(client, run_dir.name)
    assert run.info.status == "FINISHED"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["model.init_args.backbone"] == "resnet18" and params["data.init_args.image_size"] == "32"
    # recorded once: no callback internals, no second copy of the module's arguments from Lightning
    assert not [k for k in params if k.startswith("trainer.callbacks")] and params["trainer.max_epochs"]
    assert not {"alpha", "_instantiator", "_class_path"} & set(params) and params["model.init_args.alpha"]
    assert set(params) == set(_hparams(run_dir))  # the same keys in MLflow and TensorBoard
    commit = tags["git_commit"]  # the checkout's commit at run time, an ancestor of HEAD by now
    ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"])
    assert re.fullmatch("[0-9a-f]{40}", commit) and ancestor.returncode == 0
    assert tags["pipeline"] == "groceries_ssl" and tags["mlflow.source.git.commit"] == commit
    assert tags["dataset"] == card["name"] and tags["dataset_hash"] == card["content_hash"]
    final = summary["final_metrics"]
    for name in ("summary/best_test_accuracy", *(f"{a}/test_accuracy" for a in ALGORITHMS), "val/accuracy"):
        assert metrics[name] == pytest.approx(final[name]), name
    (dataset_input,) = run.inputs.dataset_inputs
    assert (
        dataset_input.dataset.name == card["name"]
        and dataset_input.dataset.digest == card["content_hash"][:32]
    )
    assert json.loads(dataset_input.dataset.profile)["splits"] == card["splits"]
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "train"
    plots = {f"plots/confusion_matrix_{a}.png" for a in ALGORITHMS} | {"plots/dataset_samples.png"}
    files = {"config.yaml", "training_summary.json", "dataset_card.json", "confusion_matrices.json"}
    assert plots | files <= _artifacts(client, run.info.run_id)
    uploaded = download_artifacts(
        run_id=run.info.run_id, artifact_path="training_summary.json", tracking_uri=uri
    )
    assert (
        json.loads(Path(uploaded).read_text())["status"] == "completed"
    )  # the final summary, not an epoch's


def test_tensorboard_has_scalars_hparams_with_the_config_and_images(all_loggers_run: AllLoggersRun) -> None:
    run_dir = all_loggers_run.run_dir
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0}).Reload()
    tags = events.Tags()
    final = all_loggers_run.summary["final_metrics"]
    assert events.Scalars("summary/best_test_accuracy")[-1].value == pytest.approx(
        final["summary/best_test_accuracy"]
    )
    assert {"val/accuracy", "train/loss_epoch", *(f"{a}/f1_score" for a in ALGORITHMS)} <= set(
        tags["scalars"]
    )
    assert {f"confusion_matrix/{a}" for a in ALGORITHMS} | {"dataset/samples"} <= set(tags["images"])
    assert events.Images("confusion_matrix/label_spreading")[-1].width > 100
    hparams = _hparams(run_dir)
    assert hparams["model.init_args.backbone"] == "resnet18" and hparams["run_name"] == run_dir.name
    assert (
        hparams["trainer.max_epochs"] == 1 and "trainer.logger.MLFlowLogger.init_args.tracking_uri" in hparams
    )
    with pytest.raises(KeyError):  # no experiment record: TensorBoard builds the HParams table from every run
        events.SummaryMetadata("_hparams_/experiment")


def test_mlflow_server_run_has_params_metrics_tags_artifacts_and_dataset_input(
    all_loggers_run: AllLoggersRun,
) -> None:
    _check_mlflow(all_loggers_run.uri, all_loggers_run.run_dir, all_loggers_run.summary, all_loggers_run.card)


def test_mlflow_sqlite_run_has_the_same_records(grocery_run: GroceryRun) -> None:
    run_dir = grocery_run.run_dir
    summary = json.loads((run_dir / "training_summary.json").read_text())
    card = json.loads((run_dir / "dataset_card.json").read_text())
    _check_mlflow(f"sqlite:///{grocery_run.workdir / 'mlflow.db'}", run_dir, summary, card)
    assert _hparams(run_dir)["data.init_args.labeled_ratio"] == pytest.approx(0.3)


def test_wandb_offline_run_has_config_history_and_dataset_and_model_artifacts(
    all_loggers_run: AllLoggersRun,
) -> None:
    run_dir, summary, card = all_loggers_run.run_dir, all_loggers_run.summary, all_loggers_run.card
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    wandb_run = OfflineRun(folder)
    config = wandb_run.config
    assert config["model"]["init_args"]["backbone"] == "resnet18" and config["trainer"]["max_epochs"] == 1
    assert (
        config["harvest"]["pipeline"] == "groceries_ssl"
        and config["dataset"]["content_hash"] == card["content_hash"]
    )
    final = summary["final_metrics"]
    assert wandb_run.metric("summary/best_test_accuracy")[-1] == pytest.approx(
        final["summary/best_test_accuracy"]
    )
    assert wandb_run.metric("val/accuracy")
    media = {
        key[: -len("/_type")]: value
        for row in wandb_run.history
        for key, value in row.items()
        if key.endswith("/_type")
    }
    assert media["dataset/samples"] == "images/separated"  # WandbLogger.log_image
    for (
        algorithm
    ) in ALGORITHMS:  # the figure and W&B's own interactive confusion matrix (a table behind a plot)
        assert media[f"confusion_matrix/{algorithm}"] == "images/separated"
        assert media[f"{algorithm}_confusion_matrix_table"] == "table-file"
        assert config["_wandb"]["visualize"][f"{algorithm}_confusion_matrix"]["panel_type"] == "Vega2"

    (dataset,) = wandb_run.artifacts_of("dataset")
    assert dataset.name == card["name"] and f"hash-{card['content_hash'][:12]}" in dataset.aliases
    assert json.loads(dataset.metadata)["content_hash"] == card["content_hash"]
    assert {entry.path for entry in dataset.manifest.contents} == {"dataset_card.json", "dataset_samples.png"}

    models = wandb_run.artifacts_of("model")
    aliases = {alias: json.loads(m.metadata) for m in models for alias in m.aliases}
    assert {m.name for m in models} == {f"model-{run_dir.name}"} and {"best", "latest"} <= set(aliases)
    best = aliases["best"]
    assert best["score"] == pytest.approx(summary["best_score"]) and best["monitor"] == "val/accuracy"
    assert best["sha256"] == sha256_file(Path(summary["best_checkpoint"]))
    assert (
        models[-1].aliases == ["latest"]
        and json.loads(models[-1].metadata)["original_filename"] == "last.ckpt"
    )


def test_one_run_name_everywhere_and_offline_said_in_one_line(all_loggers_run: AllLoggersRun) -> None:
    run_dir = all_loggers_run.run_dir
    assert RUN_NAME.match(run_dir.name)
    assert _mlflow_run(MlflowClient(all_loggers_run.uri), run_dir.name).info.run_name == run_dir.name
    (folder,) = (run_dir / "wandb").glob("offline-run-*")
    assert OfflineRun(folder).run.display_name == run_dir.name
    assert _hparams(run_dir)["run_name"] == run_dir.name and list(run_dir.glob("events.out.tfevents.*"))
    offline = [line for line in all_loggers_run.lines if line.startswith("W&B is offline")]
    assert (
        len(offline) == 1
        and "no API key" in offline[0]
        and f"/{folder.name}`" in offline[0]
        and "`wandb sync " in offline[0]
    )


def test_confusion_matrices_and_dataset_card_in_the_run_directory(all_loggers_run: AllLoggersRun) -> None:
    run_dir, card = all_loggers_run.run_dir, all_loggers_run.card
    table = json.loads((run_dir / "confusion_matrices.json").read_text())
    assert set(table["matrices"]) == {*ALGORITHMS, "cnn_head"} and len(table["class_names"]) == 3
    final = all_loggers_run.summary["final_metrics"]
    for name, matrix in table["matrices"].items():
        counts = matrix["counts"]
        assert sum(map(sum, counts)) == 15  # every test image once
        trace = sum(counts[i][i] for i in range(3))
        assert trace / 15 == pytest.approx(final[f"{name}/test_accuracy"])
        y_true = [t for t in range(3) for p in range(3) for _ in range(counts[t][p])]
        y_pred = [p for t in range(3) for p in range(3) for _ in range(counts[t][p])]
        scores = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2], zero_division=0)
        for index, class_name in enumerate(table["class_names"]):
            expected = {"precision": scores[0][index], "recall": scores[1][index], "F1": scores[2][index]}
            for metric, value in expected.items():
                assert matrix["per_class"][class_name][metric] == pytest.approx(value)
                assert final[f"{name}/{class_name}/{metric}"] == pytest.approx(value)  # in the summary too
    assert card["files"] == 60 and card["num_classes"] == 3 and card["class_imbalance"]["ratio"] == 1.0
    assert card["labeled_split"]["labeled"] + card["labeled_split"]["unlabeled"] == 36
    assert (run_dir / "plots" / "dataset_samples.png").stat().st_size > 1000
