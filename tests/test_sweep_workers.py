"""Several ``harvest sweep`` processes on one Optuna storage run one study, without duplicate trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_sweeps import SPACE, TOY_CONFIG

optuna = pytest.importorskip("optuna")

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def _worker(folder: Path, storage: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "harvest", "sweep", "--config", "toy.yaml", "--sweep", "sweep.yaml",
        "--study-name", "shared", "--storage", storage, "--trials", "6", "--", "--trainer.max_epochs=3",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize(
    "storage",
    [
        # two processes starting torch and Lightning: ~25 s on two idle cores; kept in the default suite
        # because "N workers, one study" is a promise of the README
        "sqlite:///sweeps.db",  # one machine
        pytest.param("sweeps.journal", marks=pytest.mark.slow),  # Optuna's journal file: a shared file system
    ],
)
def test_two_workers_share_one_study_without_duplicates(in_tmp: Path, storage: str) -> None:
    (in_tmp / "toy.yaml").write_text(yaml.safe_dump(TOY_CONFIG))
    sweep = {"method": "random", "metric": {"name": "val/loss", "goal": "minimize"}, "parameters": SPACE}
    (in_tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))

    workers = [_worker(in_tmp, storage) for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]

    from harvest.sweeps.optuna_study import open_storage

    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    trials = [t for t in study.trials if not t.user_attrs.get("surplus")]
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(6))  # six trials in all, each number once
    assert len({t.user_attrs["run_name"] for t in trials}) == 6
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 6  # no configuration twice
    ran = [{n for n in numbers if f"sweep shared trial {n} (of 6)" in err} for _, err in outputs]
    assert all(ran) and not ran[0] & ran[1], f"each worker ran its own trials: {ran}"
    assert sorted(p.name for p in Path("runs").iterdir() if p.name != "sweeps") == [
        f"shared_trial{n:03d}" for n in range(6)
    ]
    results = json.loads(Path("runs/sweeps/shared/results.json").read_text())
    assert len(results["trials"]) == 6 and results["best"] is not None
