"""`harvest predict` with PredictionWriter: compact Fuji predictions (path, class names, RLE masks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from conftest import fuji_args
from PIL import Image
from pycocotools import mask as coco_mask
from registry_testing import migrated_store  # noqa: F401 - fixture
from serving_testing import Registered, fuji_model  # noqa: F401 - fixture

from harvest.commands.main import cli_main


def test_fuji_predict_writes_paths_class_names_and_rle_masks(
    in_tmp: Path,
    fuji_model: Registered,  # noqa: F811
    tiny_orchard: Path,
) -> None:
    checkpoint = fuji_model.cli.trainer.checkpoint_callback.best_model_path
    args = fuji_args(tiny_orchard, "--ckpt_path", checkpoint, "--trainer.logger", "false", "--weights_only", "true")
    cli_main(["predict", *args, "--run_name", "fuji_predict", "--trainer.default_root_dir", "runs"])
    lines = Path("runs/fuji_predict/predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert records and all(Path(r["path"]).is_file() for r in records)
    for record in records:
        width, height = Image.open(record["path"]).size
        assert record["image_size"] == [height, width]
        assert set(record["class_names"]) <= {"apple"} and len(record["class_names"]) == len(record["scores"])
        if record["masks"]:
            assert coco_mask.decode(record["masks"]).shape == (height, width, len(record["masks"]))
            assert np.all(np.asarray(record["boxes"])[:, 2] <= width + 0.01)
    assert Path("runs/fuji_predict/predictions.jsonl").stat().st_size / len(records) < 20_000
