"""The MLflow pyfunc model of a Harvest version (MLflow *models from code*: this file is the model's code).

Nothing is pickled: MLflow copies this file into the model folder, and ``load_context`` checks
every file of the Harvest package against the SHA-256 in its manifest, then loads the
LightningModule with ``torch.load(weights_only=True)``. So ``mlflow.pyfunc.load_model`` and
``mlflow models serve -m models:/NAME@production --env-manager local`` work wherever Harvest is
installed.

Input: a float32 array ``[N, 3, H, W]``, images as the pipeline's data module feeds them to the
model (resized and normalised by its evaluation transform). They reach the module's own
``predict_step`` as the batch ``(images, None, names)`` that the predict loaders yield (names are
``input[i]``). Output: one dict per image (class name, index, confidence and probabilities for the
grocery classifier; boxes, labels, scores and masks for Mask R-CNN), tensors as lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


def _plain(value: Any) -> Any:
    """Tensors and arrays as (nested) lists, so the scoring server can write JSON."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class HarvestPyfunc(PythonModel):
    """A registered Harvest LightningModule behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Verify the package's files and load its LightningModule."""
        from harvest.registry_package import load_package

        self.module = load_package(Path(context.artifacts["package"]))

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> list[Any]:
        """Predictions for a batch of images."""
        images = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        names = [f"input[{i}]" for i in range(len(images))]
        with torch.inference_mode():
            return _plain(self.module.predict_step((images, None, names), 0))


mlflow.models.set_model(HarvestPyfunc())
