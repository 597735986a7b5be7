"""The MLflow pyfunc model of a Harvest version (MLflow *models from code*: this file is the model's code).

Nothing is pickled: MLflow copies this file into the model folder, Harvest's own packages travel
beside it as ``code_paths`` (MLflow puts them first on ``sys.path`` when it loads the model), and
``load_context`` checks every file of the Harvest package against the SHA-256 in its manifest,
then loads the LightningModule with ``torch.load(weights_only=True)``.

Input: a DataFrame column ``image`` (``{"dataframe_records": [{"image": "<base64 JPEG>"}]}`` over
HTTP) holding base64-encoded JPEG/PNG bytes, raw bytes, image file paths or ``uint8`` ``H x W x 3``
arrays, one image per row. The model decodes, resizes and normalises as its data module did in
training. Output: one dict per image (:mod:`harvest.serving.model`): class name, index, confidence and
probabilities for the grocery classifier; boxes, scores, labels, class names and COCO RLE masks
for Mask R-CNN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


class HarvestPyfunc(PythonModel):
    """A registered Harvest LightningModule behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        """Verify the package's files and load its LightningModule with its evaluation transform."""
        from harvest.serving.model import ServingModel

        self.model = ServingModel.from_package(Path(context.artifacts["package"]))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would read them as a schema
        """Predictions for a batch of images (see the module docstring)."""
        from harvest.serving.model import input_values

        return self.model.predict(input_values(model_input))


mlflow.models.set_model(HarvestPyfunc())
