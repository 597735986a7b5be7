"""Every YAML in ``configs/`` parses, composed as its header says; the grocery configs instantiate.

The rule, for every file: a pipeline config at the top of ``configs/`` parses alone; any other file
names how it is used in a header comment line such as
``#   harvest fit --config configs/groceries_ssl.yaml --config configs/loggers/mlflow.yaml``, and
each such line is parsed exactly as written. Files in a folder that holds something other than
LightningCLI configs (e.g. sweep search spaces) register a checker in :data:`OTHER_FORMATS`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, REPO
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, RichProgressBar

from callbacks import ModelRegistryUpload, RunCheckpoint, RunReport, TrainingSummary
from datamodules import GroceriesDataModule
from harvest.commands.main import cli_main
from harvest.lightning_cli.harvest_cli import HarvestCLI
from lightning_modules import SemiSupervisedClassifier

USAGE = re.compile(r"^#\s*harvest (fit|validate|test|predict) (.*--config.*)$")


def _check_sweep(path: Path) -> None:
    """A sweep file loads, and a value of each swept key parses on the base configs of its usage line."""
    from harvest.sweeps.space import load_sweep

    spec = load_sweep(path)
    usage = next(line for line in path.read_text().splitlines() if re.match(r"^#\s*harvest sweep (?!--backend)", line))
    tokens = shlex.split(usage.lstrip("# "))
    chain = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token == "--config"]
    assert tokens[tokens.index("--sweep") + 1] == path.relative_to(REPO).as_posix()
    values = {p.key: p.spec.get("values", [p.spec.get("value", p.spec.get("min"))])[0] for p in spec.parameters}
    args = [arg for config in chain for arg in ("--config", str(REPO / config))]
    overrides = [f"--{key}={json.dumps(value)}" for key, value in values.items()]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, *overrides, "--print_config"])
    assert exit_info.value.code in (0, None)


#: folder name under configs/ -> checker for files that are not LightningCLI configs.
OTHER_FORMATS: dict[str, Callable[[Path], None]] = {"sweeps": _check_sweep}


def _usages(path: Path) -> list[list[str]]:
    """The ``--config`` chains of the usage lines in ``path``'s header comments that include ``path``."""
    own = path.relative_to(REPO).as_posix()
    chains = []
    for line in path.read_text().splitlines():
        match = USAGE.match(line.strip())
        if match:
            tokens = shlex.split(re.sub(r"\[.*?\]", "", match.group(2)))
            chain = [tokens[i + 1] for i, token in enumerate(tokens[:-1]) if token == "--config"]
            if own in chain and chain not in chains:
                chains.append(chain)
    return chains


def _cases() -> list:
    cases = []
    for path in sorted(CONFIGS.rglob("*.y*ml")):
        name = path.relative_to(REPO).as_posix()
        if path.parent.relative_to(CONFIGS).as_posix() in OTHER_FORMATS:
            cases.append(pytest.param(name, None, id=name))
            continue
        chains = _usages(path) or ([[name]] if path.parent == CONFIGS else [[]])
        cases.extend(pytest.param(name, chain, id=" + ".join(chain) or name) for chain in chains)
    return cases


@pytest.mark.parametrize(("name", "chain"), _cases())
def test_every_config_parses_as_its_header_says(
    name: str, chain: list[str] | None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = REPO / name
    if chain is None:
        OTHER_FORMATS[path.parent.relative_to(CONFIGS).as_posix()](path)
        return
    assert chain, (
        f"{name}: add a header line `#   harvest fit --config <pipeline config> --config {name}` "
        "saying how it is used"
    )
    args = [arg for config in chain for arg in ("--config", str(REPO / config))]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"] and resolved["data"]["class_path"], (
        f"{' + '.join(chain)} names no model or data"
    )


def test_grocery_configs_instantiate_on_tiny_data(in_tmp: Path, tiny_groceries: Path) -> None:
    base = str(CONFIGS / "groceries_ssl.yaml")
    tiny = ["--data.root", str(tiny_groceries), "--trainer.logger", "false"]
    real = HarvestCLI(args=["--config", base, *tiny, "--model.weights", "null"], run=False)
    assert isinstance(real.datamodule, GroceriesDataModule) and real.datamodule.labeled_ratio == 0.3
    model = real.model
    assert isinstance(model, SemiSupervisedClassifier) and model.hparams.backbone == "resnet50"
    assert model.hparams.num_classes == 3 and model.class_names == [
        "apple",
        "banana",
        "bread",
    ]  # linked from the data
    callbacks = {type(c): c for c in real.trainer.callbacks}
    assert callbacks[RunCheckpoint].monitor == "val/accuracy" and callbacks[RunCheckpoint].save_last
    assert callbacks[EarlyStopping].monitor == "val/accuracy" and callbacks[EarlyStopping].mode == "max"
    assert any(isinstance(c, LearningRateMonitor) for c in real.trainer.callbacks)
    assert {RichProgressBar, TrainingSummary, RunReport} <= set(callbacks)
    assert callbacks[RunReport].metrics == ["*/test_accuracy", "*/f1_score"]

    demo = HarvestCLI(
        args=["--config", base, "--config", str(CONFIGS / "demo" / "groceries_cpu.yaml"), *tiny], run=False
    )
    assert demo.model.hparams.backbone == "resnet18" and demo.model.hparams.weights is None
    assert demo.datamodule.image_size == 64 and demo.trainer.max_epochs == 6
    (upload,) = [c for c in demo.trainer.callbacks if isinstance(c, ModelRegistryUpload)]  # make demo registers it
    assert upload.name == "grocery-ssl-classifier" and upload.promote_to_staging
    shipped = yaml.safe_load(Path(base).read_text())
    loggers = {
        item["class_path"].rsplit(".", 1)[1]: item.get("init_args", {})
        for item in shipped["trainer"]["logger"]
    }
    assert (
        loggers["MLFlowLogger"]["tracking_uri"] == "sqlite:///mlflow.db"
        and loggers["TensorBoardLogger"]["save_dir"] == "runs"
    )
    assert (
        shipped["trainer"]["precision"] == "bf16-mixed"
        and shipped["data"]["init_args"]["root"] == "data/DS2GROCERIES"
    )


def test_fuji_configs_instantiate_on_tiny_data(in_tmp: Path, tiny_orchard: Path) -> None:
    from callbacks import PredictionImages
    from datamodules import FujiApplesDataModule
    from lightning_modules import MaskRCNNModule

    base = str(CONFIGS / "fuji_maskrcnn.yaml")
    tiny = ["--data.root", str(tiny_orchard), "--trainer.logger", "false"]
    real = HarvestCLI(args=["--config", base, *tiny, "--model.init_args.weights", "null"], run=False)
    data, model = real.datamodule, real.model
    assert isinstance(data, FujiApplesDataModule) and (data.min_size, data.max_size, data.batch_size) == (1024, 1536, 2)
    assert isinstance(model, MaskRCNNModule) and model.hparams.arch == "maskrcnn_resnet50_fpn_v2"
    assert model.hparams.num_classes == 2 and model.class_names == ["background", "apple"]  # linked from the data
    callbacks = {type(c): c for c in real.trainer.callbacks}
    assert callbacks[RunCheckpoint].monitor == "val_segm/mAP" and callbacks[RunCheckpoint].save_last
    assert callbacks[EarlyStopping].monitor == "val_segm/mAP" and callbacks[EarlyStopping].mode == "max"
    assert {RichProgressBar, TrainingSummary, RunReport, PredictionImages} <= set(callbacks)
    assert real.trainer.gradient_clip_val == 10.0

    demo = HarvestCLI(args=["--config", base, "--config", str(CONFIGS / "demo" / "fuji_cpu.yaml"), *tiny], run=False)
    assert demo.model.hparams.arch == "resnet18" and demo.model.hparams.weights is None
    assert demo.trainer.max_epochs == 5 and demo.datamodule.synthetic is not None and demo.datamodule.min_size == 144
    (upload,) = [c for c in demo.trainer.callbacks if isinstance(c, ModelRegistryUpload)]  # make demo registers it
    assert upload.name == "fuji-maskrcnn" and upload.promote_to_staging
    shipped = yaml.safe_load(Path(base).read_text())
    loggers = {item["class_path"].rsplit(".", 1)[1]: item.get("init_args", {}) for item in shipped["trainer"]["logger"]}
    assert loggers["MLFlowLogger"]["tracking_uri"] == "sqlite:///mlflow.db"
    assert loggers["TensorBoardLogger"]["save_dir"] == "runs"
    assert shipped["trainer"]["precision"] == "bf16-mixed" and shipped["model"]["init_args"]["weights"] == "DEFAULT"


@pytest.mark.parametrize("preset", ["tensorboard", "mlflow", "wandb", "all"])
def test_logger_presets_replace_the_recipe_loggers(
    in_tmp: Path, tiny_groceries: Path, monkeypatch: pytest.MonkeyPatch, preset: str
) -> None:
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger, WandbLogger

    from callbacks import (
        CheckpointArtifacts,
        ConfusionMatrix,
        DatasetCard,
        MLflowTracking,
        TensorBoardTracking,
        WandbTracking,
    )

    monkeypatch.setenv("HOME", str(in_tmp))  # no ~/.netrc: no W&B key
    for name in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)
    chain = ["groceries_ssl.yaml", "demo/groceries_cpu.yaml", f"loggers/{preset}.yaml"]
    args = [arg for name in chain for arg in ("--config", str(CONFIGS / name))]
    cli = HarvestCLI(args=[*args, "--data.root", str(tiny_groceries), "--run_name", "preset"], run=False)
    expected = {
        "tensorboard": [TensorBoardLogger], "mlflow": [MLFlowLogger], "wandb": [WandbLogger],
        "all": [TensorBoardLogger, WandbLogger, MLFlowLogger],  # last: --trainer.logger.tracking_uri sets it
    }[preset]
    loggers = cli.trainer.loggers
    assert [type(logger) for logger in loggers] == expected
    run_dir = Path("runs", "preset")
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            assert Path(logger.log_dir) == run_dir and not logger._default_hp_metric
        elif isinstance(logger, MLFlowLogger):
            assert logger._tracking_uri == "sqlite:///mlflow.db"
            assert logger._log_batch_kwargs == {"synchronous": False}
            assert logger._run_name == "preset" and logger._experiment_name == "groceries_ssl"
        else:
            assert logger._offline and logger.save_dir == str(run_dir.resolve())  # no key: offline
            assert logger._wandb_init["name"] == "preset" and logger.name == "harvest-groceries_ssl"
    trackers = {TensorBoardTracking, MLflowTracking, WandbTracking, DatasetCard, ConfusionMatrix}
    assert trackers | {CheckpointArtifacts} <= {type(c) for c in cli.trainer.callbacks}  # from the recipe
