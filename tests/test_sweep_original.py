"""The original project's ``sweep_config.yaml`` runs on the grocery recipe after one mapping line per name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import GROCERIES, groceries_args
from test_sweep_schema import ORIGINAL, ORIGINAL_KEYS

from harvest.commands.main import cli_main
from harvest.registry.api import open_registry

pytest.importorskip("optuna")


# two grocery fits of up to 15 epochs with the SSL stage: about a minute on two CPU cores
@pytest.mark.slow
def test_the_original_sweep_file_runs_with_harvest_keys_and_registers_nothing(
    in_tmp: Path, tiny_groceries: Path
) -> None:
    sweep = in_tmp / "sweep_config.yaml"
    sweep.write_text(ORIGINAL.read_text() + yaml.safe_dump({"harvest_keys": ORIGINAL_KEYS}))
    fixed = groceries_args(tiny_groceries)[len(GROCERIES) :]
    configs = [a for c in GROCERIES for a in ("--config", c.split("=", 1)[1])]
    cli_main(
        ["sweep", *configs, "--sweep", str(sweep), "--trials", "1", "--seed", "1", "--study-name", "orig", "--", *fixed]
    )

    results = json.loads(Path("runs/sweeps/orig/results.json").read_text())
    (trial,) = results["trials"]
    assert trial["state"] == "COMPLETE" and results["metric"] == "val/accuracy"
    ran = yaml.safe_load(Path(trial["run_dir"], "config.yaml").read_text())
    params = trial["params"]
    assert ran["model"]["init_args"]["algorithms"] == [params["algorithm"]]
    assert ran["data"]["init_args"]["labeled_ratio"] == params["labeled_ratio"]
    assert ran["trainer"]["max_epochs"] == params["fine_tune_epochs"]
    assert ran["model"]["init_args"]["optimizer"]["init_args"]["lr"] == params["fine_tune_lr"]
    assert trial["effective"]["model.init_args.algorithms"] == [params["algorithm"]]
    # the demo config's ModelRegistryUpload did not run in the trial (whose MLflow run is in this store)
    assert Path("mlflow.db").is_file() and open_registry("sqlite:///mlflow.db").listing() == []
