"""Bad inputs through the ``harvest`` command: one clear first line naming the key/file, no traceback, no run left."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, FUJI, GROCERIES
from mlflow_server import free_port
from toy_lightning import QUIET_ARGS, TOY_ARGS

from harvest.commands.main import cli_main, main
from harvest.lightning_cli.harvest_cli import HarvestCLI

TOY = [*TOY_ARGS, *QUIET_ARGS, "--trainer.logger", "false"]


@pytest.fixture(autouse=True)
def _isolated(in_tmp: Path) -> None:
    """Every case runs in its own folder."""


def _harvest(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run the console script's ``main`` with ``args``; return its exit status and its stderr."""
    monkeypatch.setattr(sys, "argv", ["harvest", *args])
    with pytest.raises(SystemExit) as ended:
        main()
    return int(ended.value.code or 0), capsys.readouterr().err


#: (arguments after ``harvest fit``, what the first error line must contain)
CONFIG_MISTAKES = [
    (
        [*GROCERIES, "--model.init_args.alpah", "0.3"],
        "model.init_args.alpah is not a parameter of SemiSupervisedClassifier; did you mean model.init_args.alpha?",
    ),
    ([*GROCERIES, "--model.init_args.alpha", "abc"], "model.init_args.alpha: 'abc' is not a valid value"),
    ([*GROCERIES, "--trainer.max_epochz", "3"], "trainer.max_epochz is not a parameter; did you mean trainer.max_epo"),
    ([*GROCERIES, "--trainer.max_epochs", "many"], "trainer.max_epochs: 'many' is not a valid value (expected int"),
    (
        [*GROCERIES, "--data.init_args.labeled_ration", "0.5"],
        "data.init_args.labeled_ration is not a parameter of GroceriesDataModule; did you mean data.init_args.label",
    ),
    (
        [*FUJI, "--model.init_args.score_treshold", "0.5"],
        "model.init_args.score_treshold is not a parameter of MaskRCNNModule; did you mean model.init_args.score_thr",
    ),
    (["--config", "no/such/recipe.yaml"], "no/such/recipe.yaml does not exist"),
    ([*GROCERIES, "--seed_everything", "x1"], "seed_everything: 'x1' is not a valid value"),
]


@pytest.mark.parametrize(("args", "cause"), CONFIG_MISTAKES, ids=[c[1][:40] for c in CONFIG_MISTAKES])
def test_a_config_mistake_says_its_cause_first_then_a_usage_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], cause: str
) -> None:
    status, err = _harvest(monkeypatch, capsys, "fit", *args)
    lines = err.strip().splitlines()
    assert status == 2 and lines[0].startswith("harvest: error: ") and cause in lines[0], err
    assert len(lines) == 2 and "harvest fit --help" in lines[1]  # a hint, not 50 lines of usage
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    ("option", "parameter"), [("--optimizer=SGD", "optimizer"), ("--lr_scheduler=ExponentialLR", "scheduler")]
)
def test_two_ways_of_setting_the_optimizer_is_an_error_that_says_which_to_keep(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], option: str, parameter: str
) -> None:
    extra = ["--lr_scheduler.gamma=0.9"] if "lr_scheduler" in option else ["--optimizer.lr=0.1"]
    status, err = _harvest(monkeypatch, capsys, "fit", *GROCERIES, option, *extra)
    (line,) = [x for x in err.splitlines() if x.startswith("harvest: error:")]
    assert status == 1 and f"both set the {parameter}: keep one" in line
    assert "Traceback" not in err and not Path("runs").exists()


def test_an_existing_run_name_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Path("runs/taken").mkdir(parents=True)
    (Path("runs/taken") / "training_summary.json").write_text("{}")
    status, err = _harvest(monkeypatch, capsys, "fit", *TOY, "--run_name", "taken")
    assert status == 1 and "runs/taken already holds a run: resume it with --ckpt_path last" in err
    assert "--overwrite true" in err and [p.name for p in Path("runs/taken").iterdir()] == ["training_summary.json"]


def _toy_checkpoint() -> Path:
    cli = cli_main(["fit", *TOY, "--trainer.max_epochs", "1", "--trainer.callbacks+", "RunCheckpoint"])
    return Path(cli.trainer.checkpoint_callback.best_model_path)


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("truncate", "is truncated or damaged"),
        ("text", "is not a PyTorch checkpoint"),
        ("plain", "is not a Lightning checkpoint (no state_dict)"),
        ("missing", "does not exist"),
    ],
)
def test_checkpoint_errors_name_the_path_and_the_cause(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], damage: str, says: str
) -> None:
    bad = Path("bad.ckpt")
    if damage == "truncate":
        bad.write_bytes(_toy_checkpoint().read_bytes()[:2000])
    elif damage == "text":
        bad.write_text("not a checkpoint at all")
    elif damage == "plain":
        torch.save({"weights": torch.zeros(2)}, bad)
    before = sorted(Path("runs").rglob("*")) if Path("runs").exists() else []
    status, err = _harvest(monkeypatch, capsys, "test", *TOY, "--ckpt_path", str(bad))
    (line,) = [x for x in err.splitlines() if x.startswith("harvest: error:")]
    assert status == 1 and str(bad) in line and says in line, err
    assert (sorted(Path("runs").rglob("*")) if Path("runs").exists() else []) == before  # no stage run left


def test_a_checkpoint_of_another_model_says_whose_it_is(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tiny_groceries: Path
) -> None:
    checkpoint = _toy_checkpoint()
    args = [*GROCERIES, "--data.root", str(tiny_groceries), "--trainer.logger", "false"]
    status, err = _harvest(monkeypatch, capsys, "test", *args, "--ckpt_path", str(checkpoint))
    (line,) = [x for x in err.splitlines() if x.startswith("harvest: error:")]
    assert status == 1 and "holds a ToyModel, not a SemiSupervisedClassifier" in line and str(checkpoint) in line


@pytest.mark.parametrize("recipe", ["groceries_ssl.yaml", "fuji_maskrcnn.yaml"])
def test_the_progress_bar_can_be_switched_off_with_every_shipped_recipe(
    recipe: str, request: pytest.FixtureRequest
) -> None:
    data = request.getfixturevalue("tiny_groceries" if recipe.startswith("groceries") else "tiny_orchard")
    for preset in [None, *sorted((CONFIGS / "demo").glob(f"{recipe.split('_')[0]}*.yaml"))]:
        extra = ["--config", str(preset)] if preset else []
        cli = HarvestCLI(
            args=[
                "--config", str(CONFIGS / recipe), *extra, "--trainer.enable_progress_bar", "false",
                "--model.init_args.weights", "null", "--data.init_args.root", str(data), "--trainer.logger", "false",
            ],  # fmt: skip
            run=False,
        )
        assert cli.trainer.progress_bar_callback is None


REGISTRY_COMMANDS = [
    ["list"],
    ["compare", "m:1"],
    ["promote", "m", "--version", "1"],
    ["load", "m:1"],
    ["download", "m:1", "--dst", "downloads"],
    ["register", "RUN", "--name", "m"],
]


@pytest.mark.parametrize("command", REGISTRY_COMMANDS, ids=[c[0] for c in REGISTRY_COMMANDS])
def test_every_registry_command_fails_within_15_s_naming_a_stopped_server(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    from harvest.commands.registry import main as registry_main

    uri = f"http://127.0.0.1:{free_port()}"  # what a stopped `mlflow server` leaves: nothing listening
    if "RUN" in command:
        command = [str(Path(_toy_checkpoint()).parent.parent) if c == "RUN" else c for c in command]
    started = time.perf_counter()
    with pytest.raises(SystemExit) as ended:
        registry_main([*command, "--tracking-uri", uri])
    seconds = time.perf_counter() - started
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 1 and len(err.splitlines()) == 1, err
    assert f"MLflow server {uri} cannot be reached" in err and "mlflow server --host" in err
    assert seconds < 15, f"harvest registry {command[0]} took {seconds:.1f} s"


def test_a_run_that_fails_before_writing_anything_leaves_no_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = f"--config={CONFIGS / 'groceries_ssl.yaml'}"  # no demo preset: it would write a synthetic set there
    status, err = _harvest(monkeypatch, capsys, "fit", recipe, "--data.root", "missing/DS2GROCERIES")
    assert status == 1 and "missing/DS2GROCERIES" in err.splitlines()[-1]
    assert not Path("runs").exists() or not any(Path("runs").iterdir())
