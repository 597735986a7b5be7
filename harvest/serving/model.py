"""Predictions from raw images: what a client sends in, what comes back.

A :class:`ServingModel` wraps a loaded LightningModule with the evaluation transform its data module
used in training (read from the run's ``config.yaml``), so a client never resizes or normalises:

- in: images as encoded JPEG/PNG bytes, base64 strings of them (``data:image/...;base64,`` prefix
  allowed), paths of image files, or ``uint8`` ``H x W x 3`` (or ``H x W``) arrays; one image per
  row of a DataFrame column ``image`` (``{"dataframe_records": [{"image": "<base64>"}]}`` over
  HTTP), a dict ``{"image": [...]}`` or a plain list;
- out, one dict per image: the classifier's ``class_name``, ``class_index``, ``confidence`` and
  ``probabilities`` per class; the detector's ``boxes`` (xyxy pixels of the image as sent),
  ``scores``, ``labels``, ``class_names`` and ``masks`` as COCO compressed RLE
  (``{"size": [h, w], "counts": "..."}``, what ``pycocotools.mask.decode`` reads).
"""

from __future__ import annotations

import base64
import binascii
import inspect
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from jsonargparse.typing import import_object  # type: ignore[attr-defined]
from PIL import Image, UnidentifiedImageError

from harvest.core.errors import first_line

INPUT_COLUMN = "image"
_FIX = "send base64-encoded JPEG/PNG bytes, an image file path or uint8 H x W x 3 pixels"


class InputError(ValueError):
    """An input that is not an image; the message names it and says what to send."""


def input_values(model_input: Any) -> list[Any]:
    """The images of a request: the ``image`` column of a DataFrame or dict, a list, or an array batch."""
    if hasattr(model_input, "columns"):  # a pandas DataFrame
        if INPUT_COLUMN not in model_input.columns:
            raise InputError(
                f"no column {INPUT_COLUMN!r} in the input (columns: {', '.join(map(str, model_input.columns))}); "
                f'send {{"dataframe_records": [{{"{INPUT_COLUMN}": "<base64 JPEG>"}}]}}.'
            )
        return list(model_input[INPUT_COLUMN])
    if isinstance(model_input, dict):
        values = model_input.get(INPUT_COLUMN)
        if values is None:
            raise InputError(f"no key {INPUT_COLUMN!r} in the input (keys: {', '.join(map(str, model_input))}).")
        return list(values) if isinstance(values, (list, tuple, np.ndarray)) else [values]
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8 and model_input.ndim == 4:
        return list(model_input)
    if isinstance(model_input, (list, tuple)):
        return list(model_input)
    return [model_input]


def _open(data: bytes | str | Path, index: int, what: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
        raise InputError(f"input {index}: {what} is not a readable image ({first_line(err)}); {_FIX}.") from None


def decode_image(value: Any, index: int = 0) -> Image.Image:
    """One input as an RGB PIL image (what the data modules' transforms take); :class:`InputError` if bad.

    Args:
        value: Encoded bytes, a base64 string, a file path, a PIL image or a ``uint8`` array.
        index: Its position in the request, for messages.

    """
    if isinstance(value, Image.Image):
        image = value.convert("RGB")
    elif isinstance(value, np.ndarray) and value.dtype != object:
        if value.dtype != np.uint8 or value.ndim not in (2, 3) or (value.ndim == 3 and value.shape[2] not in (3, 4)):
            raise InputError(f"input {index}: an array of dtype {value.dtype} and shape {value.shape}; {_FIX}.")
        image = Image.fromarray(value).convert("RGB")
    elif isinstance(value, (bytes, bytearray)):
        image = _open(bytes(value), index, f"{len(value)} bytes")
    elif isinstance(value, (str, Path)):
        text = str(value).strip()
        if isinstance(value, Path) or (len(text) < 4096 and Path(text).is_file()):
            image = _open(Path(text), index, f"file {text}")
        else:
            payload = text.split(",", 1)[1] if text.startswith("data:") else text
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise InputError(
                    f"input {index}: {text[:40]!r} is neither an existing file nor base64; {_FIX}."
                ) from None
            image = _open(data, index, "the base64 data")
    else:
        raise InputError(f"input {index}: a {type(value).__name__}; {_FIX}.")
    return image


def rle_encode(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Boolean masks ``[N, H, W]`` as COCO compressed RLE dicts with ``counts`` as text (JSON-ready)."""
    from pycocotools import mask as coco_mask

    if len(masks) == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().astype(np.uint8)))
    return [{"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")} for r in encoded]


def inference_transform(config: dict[str, Any], class_names: Sequence[str]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The run's data module's evaluation transform (``inference_transform()``), built without its data set.

    Args:
        config: The run's resolved ``config.yaml``.
        class_names: The model's classes (the data module needs them when its data folder is absent).

    """
    data = config.get("data") or {}
    cls = import_object(data.get("class_path") or "")
    if not hasattr(cls, "inference_transform"):
        raise InputError(
            f"data module {data.get('class_path')!r} has no inference_transform(): this model cannot take raw images."
        )
    accepted = inspect.signature(cls).parameters
    plain = {
        key: value
        for key, value in (data.get("init_args") or {}).items()
        if key in accepted and (not isinstance(value, (dict, list)) or key in ("scale_range", "crop_scale"))
    }
    # the data folder need not exist where the model is served: predict-only, nothing is read or written
    serving = {"root": "/nonexistent/harvest-serving", "predict_root": ".", "synthetic": None}
    plain.update({k: v for k, v in serving.items() if k in accepted}, class_names=list(class_names))
    return cls(**plain).inference_transform()


class ServingModel:
    """A loaded Harvest model that takes raw images (see the module docstring).

    Args:
        module: The LightningModule, in eval mode.
        config: The resolved ``config.yaml`` of the run that trained it.

    """

    def __init__(self, module: pl.LightningModule, config: dict[str, Any]) -> None:
        self.module = module.eval()
        self.class_names = list(module.class_names)
        self.detector = not hasattr(module, "classify")
        self.transform = inference_transform(config, self.class_names)

    @classmethod
    def from_package(cls, package: Path, record: dict[str, Any] | None = None, where: str = "") -> ServingModel:
        """Verify and load a registry package (see :func:`harvest.registry.package.load_package`)."""
        from harvest.registry.package import load_package

        module = load_package(package, record, where)
        return cls(module, yaml.safe_load((package / "config.yaml").read_text()) or {})

    def predict(
        self, values: Sequence[Any], paths: Sequence[str | None] | None = None, batch_size: int = 8
    ) -> list[dict[str, Any]]:
        """One record per input (``path`` first when given), in the input order."""
        records: list[dict[str, Any]] = []
        for start in range(0, len(values), batch_size):
            raw = [decode_image(v, start + i) for i, v in enumerate(values[start : start + batch_size])]
            names = list(paths[start : start + batch_size]) if paths else [None] * len(raw)
            with torch.inference_mode():
                batch = [self.transform(image) for image in raw]
                if self.detector:
                    outputs = self.module.predict_step(batch)
                    records += [
                        detection_record(out, image.size, self.class_names, name)
                        for out, image, name in zip(outputs, raw, names, strict=True)
                    ]
                else:
                    found = self.module.classify(torch.stack(batch), names)
                    records += [r if r["path"] else {k: v for k, v in r.items() if k != "path"} for r in found]
        return records


def detection_record(
    out: dict[str, torch.Tensor], size: tuple[int, int], class_names: Sequence[str], path: str | None = None
) -> dict[str, Any]:
    """A detector's output for one image, JSON-ready, masks as COCO RLE and labels with their class names.

    Boxes and masks are moved back to ``size`` (width, height): the image as it was before the transform.
    """
    width, height = size
    masks = out["masks"]
    scale = torch.tensor([width / masks.shape[-1], height / masks.shape[-2]] * 2) if masks.ndim == 3 else 1.0
    boxes = out["boxes"] * scale if len(out["boxes"]) else out["boxes"].reshape(0, 4)
    if len(masks) and tuple(masks.shape[-2:]) != (height, width):
        masks = F.interpolate(masks[:, None].float(), size=(height, width), mode="nearest")[:, 0] > 0.5
    labels = out["labels"].tolist()
    record = {"path": path} if path else {}
    return record | {
        "image_size": [int(height), int(width)],
        "boxes": [[round(float(c), 2) for c in box] for box in boxes],
        "scores": [round(float(s), 5) for s in out["scores"]],
        "labels": labels,
        "class_names": [class_names[i] if 0 <= i < len(class_names) else str(i) for i in labels],
        "masks": rle_encode(masks.bool()),
    }


def is_detector(class_path: str) -> bool:
    """Whether the LightningModule class at ``class_path`` is a detector (it has no ``classify``)."""
    return not hasattr(import_object(class_path), "classify")


def model_signature(detector: bool) -> Any:
    """The MLflow signature: one ``image`` column in; the classifier's or detector's fields out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, Map, Object, Property, Schema

    if detector:
        rle = Object([Property("size", Array("long")), Property("counts", "string")])
        outputs = [
            ColSpec(Array("long"), "image_size"),
            ColSpec(Array(Array("double")), "boxes"),
            ColSpec(Array("double"), "scores"),
            ColSpec(Array("long"), "labels"),
            ColSpec(Array("string"), "class_names"),
            ColSpec(Array(rle), "masks"),
        ]
    else:
        outputs = [
            ColSpec("string", "class_name"),
            ColSpec("long", "class_index"),
            ColSpec("double", "confidence"),
            ColSpec(Map("double"), "probabilities"),
            ColSpec("string", "algorithm"),
        ]
    return ModelSignature(inputs=Schema([ColSpec(AnyType(), INPUT_COLUMN)]), outputs=Schema(outputs))


def example_jpeg(width: int = 64, height: int = 48) -> bytes:
    """A small JPEG (a colour gradient): the input example stored with every registered model."""
    ramp = np.linspace(0, 255, width * height * 3).reshape(height, width, 3).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def input_example() -> Any:
    """The input example: a DataFrame with one base64 JPEG in the ``image`` column."""
    import pandas as pd

    return pd.DataFrame({INPUT_COLUMN: [base64.b64encode(example_jpeg()).decode("ascii")]})
