"""``harvest data describe|check`` with the configs of ``fit``: tables, JSON, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FUJI, GROCERIES, GroceryRun, copy_of

from harvest.commands.main import cli_main


def test_describe_prints_the_card_from_fit_configs(
    tiny_groceries: Path, capsys: pytest.CaptureFixture
) -> None:
    cli_main(["data", "describe", *GROCERIES, "--data.root", str(tiny_groceries)])
    out = capsys.readouterr().out
    assert "Data set DS2GROCERIES" in out and "labeled split" in out and "content hash" in out
    counts = [line for line in out.splitlines() if line.count("│") == 5 and "class" not in line]
    assert len(counts) == 4 and all(
        line.split("│")[2:5] == ["    12 ", "   3 ", "    5 "] for line in counts[:3]
    )


def test_describe_json_has_the_hash_of_the_fit_runs_card(
    tiny_groceries: Path, grocery_run: GroceryRun, capsys: pytest.CaptureFixture
) -> None:
    cli_main(
        [
            "data",
            "describe",
            "--data",
            "GroceriesDataModule",
            "--data.root",
            str(tiny_groceries),
            "--json",
            "true",
        ]
    )
    card = json.loads(capsys.readouterr().out)
    fitted = json.loads((grocery_run.run_dir / "dataset_card.json").read_text())
    assert card["content_hash"] == fitted["content_hash"] and card["splits"] == fitted["splits"]


def test_describe_fuji_shows_instances_and_mask_areas(
    tiny_orchard: Path, capsys: pytest.CaptureFixture
) -> None:
    cli_main(["data", "describe", *FUJI, "--data.root", str(tiny_orchard)])
    out = capsys.readouterr().out
    overview, counts = out.split("Counts per class and split")
    assert "instances" in overview and "mask area" in overview and "images without instances" in overview
    assert "│ apple" in counts and "background" not in counts  # Mask R-CNN's class 0 has no instances


def test_check_passes_clean_data_and_fails_with_status_1_on_errors(
    tiny_groceries: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cli_main(["data", "check", *GROCERIES, "--data.root", str(tiny_groceries)])  # returns: status 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out

    root = copy_of(tiny_groceries, tmp_path / "broken")
    (next((root / "train").iterdir()) / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["data", "check", *GROCERIES, "--data.root", str(root)])
    assert exit_info.value.code == 1
    out = capsys.readouterr().out
    assert "broken.jpg" in out and "1 errors, 0 warnings" in out


def test_a_missing_data_set_is_one_line_with_status_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(
            ["data", "describe", GROCERIES[0], "--data.root", str(missing)]
        )  # the real recipe: no synthesis
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("harvest data describe: ") and str(missing) in line


def test_a_folder_alone_detects_the_pipeline_and_the_layout(
    tiny_orchard: Path, tiny_groceries: Path, capsys: pytest.CaptureFixture
) -> None:
    cli_main(["data", "check", str(tiny_orchard)])
    out = capsys.readouterr().out
    assert "0 errors, 0 warnings" in out and str(tiny_orchard) in out
    cli_main(["data", "describe", str(tiny_orchard), "--json", "true"])
    card = json.loads(capsys.readouterr().out)
    assert card["pipeline"] == "fuji_apples" and card["layout"] == "Fuji-SfM" and card["format"] == "via"
    cli_main(["data", "describe", str(tiny_groceries), "--json", "true"])
    assert json.loads(capsys.readouterr().out)["pipeline"] == "groceries_ssl"


def test_a_folder_with_a_config_replaces_its_root_and_builds_no_model(
    in_tmp: Path, tiny_orchard: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The real recipe names COCO weights and MLflow: a data command downloads nothing and starts no logger."""
    monkeypatch.setenv("TORCH_HOME", str(in_tmp / "torch"))
    cli_main(["data", "check", FUJI[0], str(tiny_orchard)])
    assert "0 errors, 0 warnings" in capsys.readouterr().out
    assert not (in_tmp / "torch").exists() and not (in_tmp / "mlflow.db").exists() and not (in_tmp / "runs").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "give a data folder (harvest data check FOLDER) or a fit config"),
        (["{empty}"], "no data set layout found; looked for {empty}/1-Mask-set/"),
    ],
    ids=["nothing", "no-layout"],
)
def test_a_folder_without_a_known_layout_is_one_line_with_status_2(
    tmp_path: Path, args: list[str], expected: str, capsys: pytest.CaptureFixture
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["data", "check", *(a.format(empty=empty) for a in args)])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert expected.format(empty=empty) in line and "train/<class>/*.jpg" in line or not args
