"""A real scoring server (`harvest registry serve`, i.e. `mlflow models serve`) on 127.0.0.1 answering JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow_server import free_port
from pycocotools import mask as coco_mask
from registry_testing import migrated_store  # noqa: F401 - fixture
from serving_testing import Registered, b64, fuji_model, grocery_model  # noqa: F401 - fixtures

from harvest.serving.model import ServingModel


def _ask(model: Registered, tmp_path: Path, body: dict) -> list[dict]:
    """Start the server without the virtual environment on PATH, send ``body``, stop it."""
    port = free_port()
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HARVEST_MODEL_CACHE": str(tmp_path / "cache")}
    command = [sys.executable, "-m", "harvest", "registry", "serve", model.ref, "--port", str(port)]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [*command, "--tracking-uri", model.uri], env=env, cwd=tmp_path, start_new_session=True, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(480):
            try:
                urllib.request.urlopen(url + "/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
                time.sleep(0.5)
        request = urllib.request.Request(
            url + "/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        return json.loads(urllib.request.urlopen(request, timeout=300).read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


@pytest.mark.slow
def test_the_served_classifier_answers_base64_jpegs_with_class_names(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
) -> None:
    paths = grocery_model.images[:4]
    predictions = _ask(grocery_model, tmp_path, {"dataframe_records": [{"image": b64(p)} for p in paths]})
    expected = ServingModel(grocery_model.cli.model, {"data": _data_config(grocery_model)}).predict(paths)
    assert [p["class_name"] for p in predictions] == [e["class_name"] for e in expected]
    assert np.allclose([p["confidence"] for p in predictions], [e["confidence"] for e in expected], atol=1e-5)
    assert all(set(p["probabilities"]) == set(grocery_model.cli.datamodule.class_names) for p in predictions)


@pytest.mark.slow
def test_the_served_detector_answers_base64_jpegs_with_rle_masks(
    fuji_model: Registered,  # noqa: F811
    tmp_path: Path,
) -> None:
    paths = fuji_model.images[:2]
    predictions = _ask(fuji_model, tmp_path, {"dataframe_records": [{"image": b64(p)} for p in paths]})
    assert len(predictions) == 2
    for prediction in predictions:
        height, width = prediction["image_size"]
        assert all(isinstance(m["counts"], str) for m in prediction["masks"])
        assert len(prediction["masks"]) == len(prediction["boxes"]) == len(prediction["class_names"]) > 0
        assert coco_mask.decode(prediction["masks"]).shape == (height, width, len(prediction["masks"]))


def _data_config(model: Registered) -> dict:
    datamodule = model.cli.datamodule
    return {
        "class_path": f"{type(datamodule).__module__}.{type(datamodule).__name__}",
        "init_args": {"image_size": datamodule.image_size},
    }


@pytest.mark.slow
def test_a_served_model_runs_the_harvest_code_it_carries(
    grocery_model: Registered,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Loaded in a process without this checkout on its path, the model imports Harvest from its own copy."""
    from harvest.registry.api import open_registry

    package = open_registry(grocery_model.uri).download(grocery_model.ref, tmp_path / "dl")
    model_dir = package.parents[1]
    script = (
        "import json, sys, mlflow.pyfunc, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({str(model_dir)!r})\n"
        f"out = model.predict(pd.DataFrame({{'image': [{str(grocery_model.images[0])!r}]}}))\n"
        "import harvest\n"
        "print(json.dumps({'harvest': harvest.__file__, 'class_name': out[0]['class_name']}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["harvest"].startswith(str(model_dir / "code"))
    assert answer["class_name"] in grocery_model.cli.datamodule.class_names
