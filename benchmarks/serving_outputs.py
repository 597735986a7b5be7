"""Size of a Fuji prediction as JSON (dense masks beside COCO RLE) and the export checks, in one run.

The detector is the Fuji CPU demo's model (ResNet-18 FPN, 64 channels) with seeded random weights,
on a synthetic orchard of 12 images of 192x144 (the issue's setting): an untrained detector keeps
up to 100 detections per image, the worst case for output size. Both encodings serialise the same
detections: ``dense`` is what ``PredictionWriter`` and the pyfunc wrote before (boolean masks as
nested lists), ``compact`` is :func:`harvest.serving.model.detection_record` (RLE, path, class names).
Then the classifier (ResNet-18 + head, 64-pixel input) and the detector are exported to ONNX and
TorchScript and checked against PyTorch (:mod:`harvest.serving.export`).

    python benchmarks/serving_outputs.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from PIL import Image

from datamodules import FujiApplesDataModule
from datamodules.synthetic_orchard import SyntheticOrchard
from harvest.serving.export import export_model
from harvest.serving.model import detection_record
from lightning_modules import MaskRCNNModule, SemiSupervisedClassifier


def _dense(record: dict) -> str:
    return json.dumps(record, default=lambda t: t.tolist())


def main() -> None:
    torch.manual_seed(0)
    detector = MaskRCNNModule(2, ["background", "apple"], arch="resnet18", fpn_channels=64,
                              anchor_sizes=[16, 32, 64, 128, 256]).eval()  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = SyntheticOrchard(train_images=1, val_images=12, width=192, height=144, seed=0).write(Path(tmp) / "o")
        files = sorted((root / "1-Mask-set" / "validation_images_and_annotations").glob("*.jpg"))
        transform = FujiApplesDataModule(root, min_size=144, max_size=240).inference_transform()
        images = [Image.open(p).convert("RGB") for p in files]
        inputs = [transform(image) for image in images]
        with torch.inference_mode():
            outputs = detector.predict_step(inputs)
        dense = sum(len(_dense(o)) for o in outputs)
        compact = sum(
            len(json.dumps(detection_record(o, im.size, detector.class_names, str(p))))
            for o, im, p in zip(outputs, images, files, strict=True)
        )
        detections = sum(len(o["scores"]) for o in outputs)
        print(f"{len(files)} images of 192x144, {detections} detections (random weights)")
        print("| encoding | bytes for 12 images | bytes per image | ratio |")
        print("|---|---|---|---|")
        print(f"| dense boolean masks (before) | {dense:,} | {dense // len(files):,} | 1.00 |")
        print(f"| COCO RLE, path, class names | {compact:,} | {compact // len(files):,} | {compact / dense:.4f} |")

        classifier = SemiSupervisedClassifier(6, backbone="resnet18").eval()
        pictures = [torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(4)]
        print("\n| model | format | max abs difference | same top class / detections | passed |")
        print("|---|---|---|---|---|")
        for name, module, batch, is_detector in (
            ("classifier", classifier, pictures, False),
            ("Mask R-CNN", detector, inputs[:4], True),
        ):
            for fmt in ("onnx", "torchscript"):
                check = export_model(module, fmt, Path(tmp) / f"{name}.{fmt}", batch, is_detector)
                diffs = ", ".join(f"{k[13:]} {v:.2e}" for k, v in check.items() if k.startswith("max_abs_diff"))
                same = check.get("same_top_class", check.get("detections") == check.get("exported_detections"))
                print(f"| {name} | {fmt} | {diffs} | {same} | {check['passed']} |")


if __name__ == "__main__":
    main()
