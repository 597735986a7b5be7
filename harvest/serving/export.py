"""Export a registered model to ONNX or TorchScript, checked against PyTorch on the same images.

What is exported (inputs are what the run's data module's evaluation transform makes of an image;
the sidecar ``FILE.json`` records that transform, the class names and the check's figures):

- the grocery classifier: backbone + the predictor the registry serves, input ``image
  float32[N, 3, S, S]`` (resized and ImageNet-normalised), outputs ``probabilities float32[N, C]``
  and ``features float32[N, D]``. The graph comes from the caller (``harvest registry export`` passes
  ``lightning_modules.ssl_export.classifier_graph``: label propagation / spreading as a kNN search
  among the stored training features, self-training as its linear classifier, or ``--head cnn``);
  without one it is backbone + CNN head. The sidecar's ``algorithm`` names what was exported;
- Mask R-CNN: the torchvision detector, input one ``image float32[3, H, W]`` in [0, 1], outputs
  ``boxes [K, 4]`` (xyxy), ``labels [K]``, ``scores [K]``, ``masks [K, 1, H, W]`` (probabilities).
  The TorchScript file is torchvision's scripted detector: ``model([image])`` returns
  ``(losses, detections)``.

The check runs the exported file (``onnxruntime`` for ONNX, ``torch.jit.load`` for TorchScript)
and the PyTorch module on the same images (for the classifier its own ``classify``, the code
``harvest registry predict`` runs, with the exported algorithm) and passes when the classifier's probabilities differ
by at most :data:`PROBABILITY_ATOL` with the same top class for every image, and when the detector
finds the same number of detections with boxes within :data:`BOX_ATOL` pixels and scores within
:data:`SCORE_ATOL`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from harvest.core.imports import require

Format = Literal["onnx", "torchscript"]
PROBABILITY_ATOL = 1e-4
BOX_ATOL = 0.5
SCORE_ATOL = 1e-3
OPSET = 17


class ClassifierGraph(nn.Module):
    """Backbone + head of the classifier: normalised images in, probabilities and embeddings out.

    Args:
        module: A ``SemiSupervisedClassifier`` (anything with ``encoder`` and ``head``).

    """

    algorithm = "cnn_head"

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.encoder, self.head = module.encoder, module.head

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(probabilities, features)``."""
        features = self.encoder(image).flatten(1)
        return self.head(features).float().softmax(1), features.float()


def detector_graph(module: nn.Module) -> nn.Module:
    """A copy of the torchvision detector without Harvest's fp32-output hooks (no-ops in fp32, unscriptable)."""
    model = copy.deepcopy(module.model).eval()
    for sub in model.modules():
        sub._forward_hooks.clear()
    return model


def _export_onnx(graph: nn.Module, example: Any, output: Path, detector: bool) -> None:
    if detector:
        names = ["boxes", "labels", "scores", "masks"]
        axes = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"}, "labels": {0: "detections"}}
        axes |= {"scores": {0: "detections"}, "masks": {0: "detections", 2: "height", 3: "width"}}
    else:
        names = ["probabilities", "features"]
        axes = {"image": {0: "batch"}, "probabilities": {0: "batch"}, "features": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's tracer warnings on torchvision's code
        torch.onnx.export(
            graph, example, str(output), opset_version=OPSET, dynamo=False, input_names=["image"],
            output_names=names, dynamic_axes=axes,
        )  # fmt: skip


def _export_torchscript(graph: nn.Module, example: Any, output: Path, detector: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export; still the portable file
        scripted = torch.jit.script(graph) if detector else torch.jit.trace(graph, example)
    scripted.save(str(output))


def _run_exported(fmt: Format, output: Path, inputs: list[torch.Tensor], detector: bool) -> list[list[np.ndarray]]:
    """Outputs of the exported file, per input (a batch of all inputs for the classifier)."""
    if fmt == "onnx":
        require("onnxruntime", "checking an ONNX export")
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        feeds = [x.numpy() for x in inputs] if detector else [torch.stack(inputs).numpy()]
        return [session.run(None, {"image": feed}) for feed in feeds]
    loaded = torch.jit.load(str(output)).eval()
    with torch.inference_mode():
        if detector:
            return [
                [d[k].numpy() for k in ("boxes", "labels", "scores", "masks")]
                for d in (loaded([x])[1][0] for x in inputs)
            ]
        return [[t.numpy() for t in loaded(torch.stack(inputs))]]


def _check(reference: list[list[np.ndarray]], exported: list[list[np.ndarray]], detector: bool) -> dict[str, Any]:
    if not detector:
        (want_p, want_f), (got_p, got_f) = reference[0], exported[0]
        prob = float(np.abs(want_p - got_p).max())
        same_top = bool((want_p.argmax(1) == got_p.argmax(1)).all())
        return {
            "max_abs_diff_probabilities": prob,
            "max_abs_diff_features": float(np.abs(want_f - got_f).max()),
            "same_top_class": same_top,
            "tolerance": {"probabilities": PROBABILITY_ATOL},
            "passed": same_top and prob <= PROBABILITY_ATOL,
        }
    counts = [(len(w[0]), len(g[0])) for w, g in zip(reference, exported, strict=True)]
    same_count = all(a == b for a, b in counts)
    boxes = scores = masks = 0.0
    if same_count:
        for want, got in zip(reference, exported, strict=True):
            if len(want[0]):
                boxes = max(boxes, float(np.abs(want[0] - got[0]).max()))
                scores = max(scores, float(np.abs(want[2] - got[2]).max()))
                masks = max(masks, float(np.abs(want[3] - got[3]).max()))
    return {
        "detections": [a for a, _ in counts],
        "exported_detections": [b for _, b in counts],
        "max_abs_diff_boxes": boxes,
        "max_abs_diff_scores": scores,
        "max_abs_diff_masks": masks,
        "tolerance": {"boxes_px": BOX_ATOL, "scores": SCORE_ATOL},
        "passed": same_count and boxes <= BOX_ATOL and scores <= SCORE_ATOL,
    }


def _classifier_reference(module: nn.Module, graph: nn.Module, batch: torch.Tensor) -> list[np.ndarray]:
    """The module's own prediction (``classify``, as ``predict`` runs it) and the graph's features in PyTorch."""
    records = module.classify(batch, algorithm=graph.algorithm)
    probabilities = np.array([list(r["probabilities"].values()) for r in records], dtype=np.float32)
    return [probabilities, graph(batch)[1].numpy()]


def export_model(
    module: nn.Module,
    fmt: Format,
    output: Path,
    inputs: list[torch.Tensor],
    detector: bool,
    graph: nn.Module | None = None,
) -> dict[str, Any]:
    """Export ``module`` (or its classifier ``graph``) to ``output`` and check it on ``inputs`` (transformed images).

    Returns:
        The check's figures (``passed``, maximal absolute differences, tolerances).

    """
    if graph is None:
        graph = detector_graph(module) if detector else ClassifierGraph(module).eval()
    example: Any = ([inputs[0]],) if detector else (torch.stack(inputs),)
    output.parent.mkdir(parents=True, exist_ok=True)
    (_export_onnx if fmt == "onnx" else _export_torchscript)(graph, example, output, detector)
    with torch.inference_mode():
        if detector:
            keys = ("boxes", "labels", "scores", "masks")
            reference = [[graph([x])[0][k].numpy() for k in keys] for x in inputs]
        else:
            reference = [_classifier_reference(module.eval(), graph, torch.stack(inputs))]
    return _check(reference, _run_exported(fmt, output, inputs, detector), detector)


def write_sidecar(output: Path, content: dict[str, Any]) -> Path:
    """Write what a client needs beside the exported file (``FILE.json``) and return its path."""
    path = output.with_name(output.name + ".json")
    path.write_text(json.dumps(content, indent=2))
    return path


def check_images(folder: Path | None, count: int = 4) -> list[Any]:
    """Images for the check: the first ``count`` of ``folder``, else the input example and seeded noise."""
    from harvest.serving.model import example_jpeg

    if folder is not None:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:count]
        if not files:
            raise ValueError(f"--images {folder}: no .jpg/.jpeg/.png files there for the check.")
        return files
    noise = np.random.default_rng(0).integers(0, 256, size=(count - 1, 96, 128, 3), dtype=np.uint8)
    return [example_jpeg(), *noise]


def export_registered(
    registry: Any,
    ref: str,
    fmt: Format,
    output: Path,
    images: Path | None = None,
    classifier_graph: Callable[[nn.Module], nn.Module] | None = None,
) -> dict[str, Any]:
    """Export the registered ``ref`` (cached, SHA-256 checked) to ``output`` and write its sidecar.

    Args:
        registry: The model registry.
        ref: ``NAME[:VERSION|@ALIAS]``.
        fmt: ``onnx`` or ``torchscript``.
        output: The file to write (its sidecar is ``FILE.json``).
        images: Folder whose first images the check uses (default: the input example and noise).
        classifier_graph: Builds a classifier's export graph from its module (with an ``algorithm``
            attribute); default backbone + CNN head.

    Returns:
        The sidecar's content, with the check's figures under ``check``.

    """
    from harvest.registry.cache import cached_package
    from harvest.serving.model import ServingModel, decode_image

    info, package, _ = cached_package(registry, ref)
    model = ServingModel.from_package(package, info.record, f"{ref} ({info.label})")
    inputs = [model.transform(decode_image(v, i)) for i, v in enumerate(check_images(images))]
    graph = None if model.detector or classifier_graph is None else classifier_graph(model.module)
    check = export_model(model.module, fmt, output, inputs, model.detector, graph)
    algorithm = None if model.detector else (graph.algorithm if graph is not None else ClassifierGraph.algorithm)
    content = {
        "model": info.label,
        "format": fmt,
        "file": output.name,
        "kind": "detector" if model.detector else "classifier",
        "algorithm": algorithm,
        "class_names": model.class_names,
        "input": "image float32[3, H, W] in [0, 1]" if model.detector else "image float32[N, 3, S, S], normalised",
        "preprocessing": repr(model.transform) if not model.detector else "shorter side resized as in training",
        "check": check,
    }
    write_sidecar(output, content)
    return content


def summary_line(content: dict[str, Any]) -> str:
    """The check in one line: maximal absolute differences, same top class / detections, tolerance, verdict."""
    check = content["check"]
    figures = ", ".join(
        f"{k.removeprefix('max_abs_diff_')} {v:.3g}" for k, v in check.items() if k.startswith("max_abs")
    )
    if content["kind"] == "classifier":
        same = f"same top class: {'yes' if check['same_top_class'] else 'NO'}"
    else:
        same = f"same detections: {'yes' if check['detections'] == check['exported_detections'] else 'NO'}"
    verdict = "passed" if check["passed"] else "FAILED"
    tolerance = check["tolerance"]
    head = f"{content['format']}, max abs difference against PyTorch: {figures}; {same} (tolerance {tolerance})"
    return f"{head}: {verdict}"
