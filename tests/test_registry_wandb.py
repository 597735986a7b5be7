"""The W&B Registry backend without a connection: a clear message, the command to run later, nothing written.

Linking into the W&B Registry needs the W&B servers, which the tests cannot reach; the rules the
online path follows are the shared ones of ``harvest.registry.api`` (tested on MLflow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from registry_testing import toy_runs  # noqa: F401 - fixture

from harvest.commands.registry import main as registry_cli


def _tree(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _fails_with(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        registry_cli(list(argv))
    assert exit_info.value.code == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_offline_registration_says_what_to_run_once_online_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    toy_runs: tuple[Path, Path],  # noqa: F811
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    run_dir = toy_runs[1]
    before = _tree(tmp_path) | _tree(run_dir)
    line = _fails_with(
        capsys,
        "register",
        str(run_dir),
        "--name",
        "toy",
        "--alias",
        "staging",
        "--tracking-uri",
        "wandb://team/harvest",
    )
    assert line == (
        "harvest registry register: registering toy needs a connection to the W&B Registry "
        "(WANDB_MODE=offline); "
        "nothing was written. Once online: `wandb login` (and unset WANDB_MODE), then "
        f"`harvest registry register {run_dir} --name toy --alias staging --tracking-uri wandb://team/harvest`."
    )
    assert _tree(tmp_path) | _tree(run_dir) == before

    line = _fails_with(
        capsys,
        "promote",
        "toy",
        "--version",
        "1",
        "--to-alias",
        "production",
        "--tracking-uri",
        "wandb://team/harvest",
    )
    assert "promoting toy:1 to production needs a connection" in line
    assert line.endswith(
        "`harvest registry promote toy --version 1 --to-alias production --tracking-uri wandb://team/harvest`."
    )


def test_without_an_api_key_the_registry_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc entry either
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    line = _fails_with(capsys, "list", "--tracking-uri", "wandb://harvest")
    assert "listing models needs a connection to the W&B Registry (no W&B API key is configured)" in line
    assert "then run the same command again" in line and not list(tmp_path.iterdir())
