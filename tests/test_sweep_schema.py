"""Sweep files are checked before any trial: W&B's own schema, ``harvest fit`` keys, mappings, conflicts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from conftest import CONFIGS, GROCERIES, REPO

from harvest.sweeps.keys import check_conflicts, parse_fit_config, resolve_keys
from harvest.sweeps.schema import SCHEMA_PATH, validate_sweep_config
from harvest.sweeps.space import SweepConfigError, load_sweep
from harvest.sweeps.wandb_export import agent_command

pytest.importorskip("jsonschema")

ORIGINAL = Path(__file__).parent / "sweep_files" / "original_sweep_config.yaml"
#: The original project's names -> harvest keys: one line per parameter, and one for its metric.
ORIGINAL_KEYS = {
    "labeled_ratio": "data.init_args.labeled_ratio",
    "algorithm": "model.init_args.algorithms",
    "n_neighbors": "model.init_args.n_neighbors",
    "fine_tune_epochs": "trainer.max_epochs",
    "fine_tune_lr": "model.init_args.optimizer.init_args.lr",
    "test_accuracy": "val/accuracy",
}
RECIPE = [c.split("=", 1)[1] for c in GROCERIES]
VALID = {
    "method": "random",
    "metric": {"name": "val/loss", "goal": "minimize"},
    "parameters": {"model.init_args.lr": {"min": 0.01, "max": 1.0, "distribution": "log_uniform_values"}},
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_the_schema_is_wandbs_file_unchanged() -> None:
    notice = (SCHEMA_PATH.parent / "README.md").read_text()
    assert hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest() in notice
    assert "MIT License" in (SCHEMA_PATH.parent / "LICENSE").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "method: bayes\nmetric: {name: val/loss, goal: maximum}\nparameters: {lr: {values: [1]}}\n",
            r"metric\.goal: 'maximum' is not one of \['minimize', 'maximize'\].*fix: use one of: minimize, maximize",
        ),
        (
            "method: bayes\ncount: 10\nmetric: {name: val/loss}\nparameters: {lr: {values: [1]}}\n",
            r"the top level: Additional properties are not allowed \('count' was unexpected\).*run_cap",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {values: [1]}}\n"
            "early_terminate: {type: hyperband, eta: 2}\n",
            r"early_terminate: .*min_iter, or max_iter and s",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {values: [1]}}\n"
            "early_terminate: {type: hyperband, max_iter: 9}\n",
            r"early_terminate: .*'s' is a required property",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {min: 1e-5, max: 1.0e-3}}\n",
            r"parameters\.lr\.min is the text '1e-5', not a number .* write 1\.0e-05",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {min: 1, mx: 3}}\n",
            r"parameters\.lr: .*'max' is a required property",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {values: [1]}}\n"
            "early_terminate: {type: hyperband, min_iter: 1, monitor: val/loss}\n",
            r"early_terminate: Additional properties are not allowed \('monitor' was unexpected\)",
        ),
        ("method: hill\nmetric: {name: m}\nparameters: {lr: {values: [1]}}\n", r"method: 'hill' is not one of"),
        ("method: bayes\nparameters: {lr: {values: [1]}}\n", r"metric\.name is missing"),
        (
            "method: grid\nmetric: {name: m}\nparameters: {lr: {min: 0.1, max: 1.0}}\n",
            r"grid search needs `values` for 'lr'",
        ),
        (
            "method: bayes\nmetric: {name: m}\nparameters: {lr: {distribution: normal, mu: 0, sigma: 1}}\n",
            r"distribution normal runs on the W&B server only",
        ),
    ],
)
def test_a_bad_sweep_file_names_the_file_the_key_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SweepConfigError, match=message) as error:
        load_sweep(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


def test_wandbs_own_forms_pass(tmp_path: Path) -> None:
    spec = {
        **VALID,
        "run_cap": 4,
        "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3},
        "parameters": {
            "model": {"parameters": {"init_args": {"parameters": {"lr": {"min": 0.01, "max": 1.0}}}}},
            "data.init_args.batch_size": {"min": 8, "max": 32},
        },
    }
    loaded = load_sweep(_write(tmp_path, yaml.safe_dump(spec)))
    lr, batch = sorted(loaded.parameters, key=lambda p: p.key, reverse=True)
    assert (lr.key, lr.distribution) == ("model.init_args.lr", "uniform")  # nested parameters as dotted keys
    assert (batch.distribution, batch.choices[:2]) == ("int_uniform", [8, 9])  # W&B infers int_uniform from ints


def test_an_unknown_parameter_names_the_closest_fit_keys(tmp_path: Path) -> None:
    wrong = {"model.init_args.optimizer.init_args.learning_rate": {"values": [0.1]}}
    spec = load_sweep(_write(tmp_path, yaml.safe_dump({**VALID, "parameters": wrong})))
    config = parse_fit_config(RECIPE, [])
    with pytest.raises(SweepConfigError, match="is not a key harvest fit accepts") as error:
        resolve_keys(spec, config)
    assert "closest: model.init_args.optimizer.init_args.lr" in str(error.value)
    assert "harvest_keys:" in str(error.value) and "\n" not in str(error.value)


def test_the_original_projects_sweep_runs_after_one_mapping_line_per_name(tmp_path: Path) -> None:
    config = parse_fit_config(RECIPE, [])
    with pytest.raises(SweepConfigError, match="'labeled_ratio' is not a key harvest fit accepts"):
        resolve_keys(load_sweep(ORIGINAL), config)

    spec = load_sweep(ORIGINAL, ORIGINAL_KEYS)  # as --key NAME=KEY on the command line
    resolve_keys(spec, config)
    assert {p.name: p.key for p in spec.parameters} == {k: v for k, v in ORIGINAL_KEYS.items() if k != "test_accuracy"}
    assert spec.metric == "val/accuracy"
    algorithm = next(p for p in spec.parameters if p.name == "algorithm")
    assert algorithm.as_list and algorithm.value_for_key("label_spreading") == ["label_spreading"]

    # the same mapping inside the sweep file (harvest_keys) gives the same sweep
    in_file = _write(tmp_path, ORIGINAL.read_text() + yaml.safe_dump({"harvest_keys": ORIGINAL_KEYS}))
    assert [(p.name, p.key) for p in load_sweep(in_file).parameters] == [
        (name, ORIGINAL_KEYS[name]) for name in ORIGINAL_KEYS if name != "test_accuracy"
    ]

    # the W&B export: harvest keys, lists for the list-typed key, no program, and W&B's schema accepts it
    exported = spec.wandb_config(agent_command(RECIPE, [], config))
    validate_sweep_config(exported, "exported")
    assert "program" not in exported and exported["metric"] == {"name": "val/accuracy", "goal": "maximize"}
    assert exported["parameters"]["model.init_args.algorithms"]["values"][0] == ["label_propagation"]


def test_a_fixed_override_of_a_swept_key_is_an_error() -> None:
    spec = load_sweep(CONFIGS / "sweeps" / "groceries_ssl.yaml")
    extra = ["--trainer.max_epochs=1", "--data.batch_size", "8"]
    config = parse_fit_config(RECIPE, extra)
    resolve_keys(spec, config)
    with pytest.raises(SweepConfigError, match=r"--trainer\.max_epochs after -- fixes trainer\.max_epochs"):
        check_conflicts(spec, extra, config)
    check_conflicts(spec, ["--data.batch_size", "8"], config)  # not swept: fine


@pytest.mark.parametrize("name", ["groceries_ssl.yaml", "fuji_maskrcnn.yaml"])
def test_shipped_sweeps_select_on_validation_metrics(name: str) -> None:
    spec = load_sweep(CONFIGS / "sweeps" / name)
    assert spec.metric.startswith("val"), f"{name} selects on {spec.metric}, not a validation metric"
    assert spec.early_terminate.get("type") == "hyperband" and "monitor" not in spec.early_terminate
    assert (REPO / "configs" / "sweeps" / name).is_file()


def test_an_override_harvest_fit_refuses_fails_in_one_line() -> None:
    with pytest.raises(SweepConfigError, match=r"unrecognized arguments: --trainer\.maxx_epochs=1$") as error:
        parse_fit_config(RECIPE, ["--trainer.maxx_epochs=1"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("early", "epochs", "expected"),
    [
        ({"min_iter": 1, "eta": 2}, 3, (1, 3, 2)),
        ({"min_iter": 2}, 10, (2, 10, 3)),  # W&B's default eta is 3
        ({"max_iter": 27, "s": 2, "eta": 3}, 30, (3, 27, 3)),  # first rung max_iter / eta**s
    ],
)
def test_wandb_hyperband_maps_to_optunas_hyperband_pruner(
    tmp_path: Path, early: dict, epochs: int, expected: tuple
) -> None:
    from jsonargparse import Namespace

    from harvest.sweeps.optuna_study import hyperband

    spec = load_sweep(_write(tmp_path, yaml.safe_dump({**VALID, "early_terminate": {"type": "hyperband", **early}})))
    pruner = hyperband(spec, Namespace(trainer=Namespace(max_epochs=epochs)))
    assert (pruner._min_resource, pruner._max_resource, pruner._reduction_factor) == expected
