"""``harvest sweep`` with Optuna: real trials, one source of truth per value, Hyperband that prunes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml
from conftest import clear_run_name

from harvest.commands.main import cli_main
from harvest.sweeps.space import SweepConfigError

pytest.importorskip("optuna")

TOY_CONFIG = {
    "seed_everything": 7,
    "model": {"class_path": "toy_lightning.ToyModel"},
    "data": {"class_path": "toy_lightning.ToyData"},
    "trainer": {
        "max_epochs": 3,
        "deterministic": True,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [{"class_path": "callbacks.TrainingSummary"}],
    },
}
#: lr 1e-5 barely moves the toy model: a clearly bad trial next to lr 0.5 and 1.0
SPACE = {"model.init_args.lr": {"values": [1.0e-5, 0.5, 1.0]}, "data.init_args.batch_size": {"values": [8, 32]}}


@pytest.fixture
def toy_config(in_tmp: Path) -> Path:
    path = in_tmp / "toy.yaml"
    path.write_text(yaml.safe_dump(TOY_CONFIG))
    return path


@pytest.fixture
def sweep_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Harvest's log lines (its loggers do not propagate once the CLI configured logging)."""
    loggers = [logging.getLogger(name) for name in ("harvest", "callbacks")]
    for logger in loggers:
        logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)
    yield caplog
    for logger in loggers:
        logger.removeHandler(caplog.handler)


def _sweep(folder: Path, **overrides: object) -> Path:
    spec = {"method": "random", "metric": {"name": "val/loss", "goal": "minimize"}, "parameters": SPACE, **overrides}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _run(config: Path, sweep: Path, *args: str) -> dict:
    study = "toy_sweep"
    cli_main(["sweep", "--config", str(config), "--sweep", str(sweep), "--study-name", study, "--seed", "0", *args])
    return json.loads(Path("runs/sweeps", study, "results.json").read_text())


def _summary(trial: dict) -> dict:
    return json.loads(Path("runs", trial["run_name"], "training_summary.json").read_text())


def test_trials_record_what_they_ran_and_best_yaml_reruns_the_best_exactly(toy_config: Path) -> None:
    early_stopping = ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/loss"]
    fixed = ["--trainer.max_epochs=2", *early_stopping, "--trainer.callbacks.patience=100"]
    results = _run(toy_config, _sweep(toy_config.parent), "--trials", "8", "--", *fixed)

    trials = results["trials"]
    # six distinct configurations: a random search over them runs each once, not 8 trials with repeats
    assert len(trials) == 6 and len({json.dumps(t["params"], sort_keys=True) for t in trials}) == 6
    for trial in trials:
        summary = _summary(trial)
        assert summary["epochs_trained"] == 2  # the fixed override, and the record says so
        effective = trial["effective"]
        assert effective.pop("trainer.callbacks")[-1]["init_args"]["patience"] == 100  # an override inside a list
        assert effective == {**trial["params"], "trainer.max_epochs": 2}
        assert summary["final_metrics"]["val/loss"] == pytest.approx(trial["value"])
    best = min(trials, key=lambda t: t["value"])
    assert results["best"]["number"] == best["number"]

    best_yaml = Path("runs/sweeps/toy_sweep/best.yaml")
    assert yaml.safe_load(best_yaml.read_text())["trainer"]["max_epochs"] == 2
    clear_run_name()
    rerun = cli_main(["fit", "--config", str(toy_config), "--config", str(best_yaml)])
    assert float(rerun.trainer.callback_metrics["val/loss"]) == best["value"]  # deterministic: the same number
    assert rerun.trainer.current_epoch == 2 and rerun.model.hparams.lr == best["params"]["model.init_args.lr"]


def test_a_schema_invalid_file_fails_before_any_trial_and_creates_no_run(toy_config: Path) -> None:
    sweep = _sweep(toy_config.parent, metric={"name": "val/loss", "goal": "maximum"})
    with pytest.raises(SweepConfigError, match=r"metric\.goal: 'maximum' is not one of"):
        _run(toy_config, sweep)
    assert not Path("runs").exists() and not Path("mlflow.db").exists()


def test_a_fixed_override_of_a_swept_key_fails_before_any_trial(toy_config: Path) -> None:
    with pytest.raises(SweepConfigError, match=r"--model\.lr after -- fixes model\.init_args\.lr"):
        _run(toy_config, _sweep(toy_config.parent), "--", "--model.lr=0.1")
    assert not Path("runs").exists()


def test_mapped_parameter_names_run(toy_config: Path) -> None:
    """A file written for another program: names mapped in the file (harvest_keys) and with --key."""
    sweep = _sweep(
        toy_config.parent,
        metric={"name": "loss", "goal": "minimize"},
        parameters={"learning_rate": {"values": [0.25, 0.5]}, "batch": {"values": [16]}},
        harvest_keys={"learning_rate": "model.lr", "loss": "val/loss"},  # short forms are fine
    )
    results = _run(toy_config, sweep, "--trials", "2", "--key", "batch=data.init_args.batch_size")
    for trial in results["trials"]:
        assert trial["state"] == "COMPLETE"
        ran = yaml.safe_load(Path(trial["run_dir"], "config.yaml").read_text())
        assert ran["model"]["init_args"]["lr"] == trial["params"]["learning_rate"]
        assert ran["data"]["init_args"]["batch_size"] == 16
        assert trial["effective"] == {
            "model.init_args.lr": trial["params"]["learning_rate"],
            "data.init_args.batch_size": 16,
        }


def test_hyperband_prunes_a_clearly_bad_trial_and_says_so(
    toy_config: Path, sweep_log: pytest.LogCaptureFixture
) -> None:
    sweep = _sweep(toy_config.parent, early_terminate={"type": "hyperband", "min_iter": 1, "eta": 2})
    results = _run(toy_config, sweep, "--trials", "6")

    trials = results["trials"]
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert pruned, "Hyperband pruned nothing"
    bad = [t for t in trials if t["params"]["model.init_args.lr"] == 1.0e-5]
    assert bad and all(t["state"] == "PRUNED" for t in bad)  # no clearly bad trial ran to the end
    for trial in pruned:
        epoch = trial["pruned"]["epoch"]
        assert _summary(trial)["epochs_trained"] < 3 and str(epoch) in trial["reported"]
        assert f"sweep trial {trial['number']} epoch {epoch}: val/loss=" in sweep_log.text
        assert f"trial {trial['number']} (of 6): " in sweep_log.text
    completed = [t for t in trials if t["state"] == "COMPLETE"]
    assert all(len(t["reported"]) == 3 for t in completed)  # the swept metric, reported every epoch
    assert "pruned after epoch" in sweep_log.text


def test_a_hyperband_that_cannot_prune_says_so(toy_config: Path, sweep_log: pytest.LogCaptureFixture) -> None:
    sweep = _sweep(toy_config.parent, early_terminate={"type": "hyperband", "min_iter": 3})
    _run(toy_config, sweep, "--trials", "1", "--", "--trainer.max_epochs=1")
    assert "Hyperband's first rung is epoch 3 but trials train 1 epoch(s): no trial can be stopped early" in (
        sweep_log.text
    )


def test_a_test_metric_warns_in_one_line(toy_config: Path, sweep_log: pytest.LogCaptureFixture) -> None:
    sweep = _sweep(toy_config.parent, metric={"name": "toy/test_accuracy", "goal": "maximize"})
    with pytest.raises(SweepConfigError, match=r"'toy/test_accuracy' was not logged .* val/loss"):
        _run(toy_config, sweep, "--trials", "1", "--", "--trainer.max_epochs=1")
    (line,) = [r.getMessage() for r in sweep_log.records if "a test metric" in r.getMessage()]
    assert "selects on toy/test_accuracy" in line and "\n" not in line


def test_a_configuration_tpe_proposes_again_is_not_trained_again(toy_config: Path) -> None:
    space = {"model.init_args.lr": {"values": [0.5, 1.0]}, "data.init_args.batch_size": {"values": [16]}}
    sweep = _sweep(toy_config.parent, method="bayes", parameters=space)
    results = _run(toy_config, sweep, "--trials", "4", "--", "--trainer.max_epochs=1")

    trials = results["trials"]
    assert len(trials) == 4 and all(t["state"] == "COMPLETE" for t in trials)
    repeats = [t for t in trials if t["same_as"] is not None]
    assert len(repeats) == 2  # two distinct configurations, four trials
    for trial in repeats:
        first = trials[trial["same_as"]]
        assert first["same_as"] is None and first["params"] == trial["params"] and first["value"] == trial["value"]
        assert trial["run_name"] == first["run_name"]
    assert sorted(p.name for p in Path("runs").iterdir() if p.name != "sweeps") == sorted(
        t["run_name"] for t in trials if t["same_as"] is None
    )
