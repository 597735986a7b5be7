"""COCO evaluation: Harvest's COCOeval-based metrics beside torchmetrics' and pycocotools' on the files.

    python benchmarks/coco_evaluation.py [--images 50] [--size 512] [--detections 30] [--crowd 0.1]

A random COCO data set is written as annotation tools write it (polygon annotations whose ``area`` is
the polygon's, crowd regions, three categories) with detections near the objects (jittered masks,
false positives, misses). Scored three ways, side by side in one run:

* ``pycocotools.COCOeval`` on the JSON files (the reference);
* Harvest: the data set read by ``FujiApplesDataModule``, the detections fed to ``DetectionMetrics`` as the
  LightningModule feeds them, with both backends;
* torchmetrics' ``MeanAveragePrecision`` as Harvest used it before (boxes, labels and masks only), and
  given ``iscrowd`` and ``area`` too.

Prints each one's segm and bbox mAP, its largest difference from the reference over the 7 summary
numbers, and the seconds each evaluation took (time to score, data reading excluded).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchmetrics.detection import MeanAveragePrecision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datamodules import FujiApplesDataModule  # noqa: E402
from lightning_modules.detection_metrics import DetectionMetrics  # noqa: E402

CLASSES = ["background", "apple", "pear", "leaf"]
STATS = {"mAP": 0, "mAP50": 1, "mAP75": 2, "mAP_small": 3, "mAP_medium": 4, "mAP_large": 5, "mAR100": 8}


def ellipse(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    return [round(float(v), 2) for a in angles for v in (cx + rx * np.cos(a), cy + ry * np.sin(a))]


def write_data(root: Path, images: int, size: int, per_image: int, crowd: float, seed: int) -> dict:
    """COCO ground truth on disk (val/ and train/), and the detections per image id."""
    rng = np.random.default_rng(seed)
    entries, annotations, detections = [], [], {}
    (root / "val" / "images").mkdir(parents=True)
    for image_id in range(1, images + 1):
        name = f"{image_id:04d}.jpg"
        Image.new("RGB", (size, size), (80, 120, 60)).save(root / "val" / "images" / name)
        entries.append({"id": image_id, "file_name": name, "width": size, "height": size})
        detections[image_id] = []
        for _ in range(per_image // 2):
            r = float(rng.uniform(4, size / 8))
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
            category = int(rng.integers(1, 4))
            poly = ellipse(cx, cy, r, r * float(rng.uniform(0.6, 1.0)))
            is_crowd = bool(rng.random() < crowd)
            rle = mask_utils.merge(mask_utils.frPyObjects([poly], size, size))
            xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
            area = float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category, "iscrowd": int(is_crowd)}
            if is_crowd:
                flat = mask_utils.decode(rle).flatten(order="F").astype(np.int8)
                runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
                ann["segmentation"] = {"size": [size, size], "counts": ([0] if flat[0] else []) + runs}
            else:
                ann["segmentation"] = [poly]
            ann |= {"area": area, "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs)), float(np.ptp(ys))]}
            annotations.append(ann)
            if rng.random() < 0.85:  # a detection near it, maybe of another class
                jitter = rng.normal(0, r * 0.12, 3)
                found = ellipse(cx + jitter[0], cy + jitter[1], max(2.0, r + jitter[2]), r * 0.9)
                label = category if rng.random() < 0.9 else int(rng.integers(1, 4))
                detections[image_id].append((label, found, float(rng.uniform(0.3, 1.0))))
        for _ in range(per_image - len(detections[image_id])):  # false positives
            r = float(rng.uniform(3, size / 10))
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
            detections[image_id].append((int(rng.integers(1, 4)), ellipse(cx, cy, r, r), float(rng.uniform(0, 0.7))))
    data = {
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES) if i],
    }
    (root / "val" / "annotations.json").write_text(json.dumps(data))
    (root / "train").symlink_to(root / "val")
    return detections


def as_outputs(found: list, size: int) -> dict:
    masks = [mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([p], size, size))) for _, p, _ in found]
    boxes = []
    for mask in masks:
        x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask))).tolist()
        boxes.append([x, y, x + w, y + h])
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor([c for c, _, _ in found], dtype=torch.int64),
        "scores": torch.tensor([s for _, _, s in found], dtype=torch.float32),
        "masks": torch.from_numpy(np.stack(masks).astype(np.float32))[:, None],
    }


def reference(root: Path, outputs: dict[int, dict], iou_type: str) -> list[float]:
    results = []
    for image_id, out in outputs.items():
        for box, label, score, mask in zip(out["boxes"], out["labels"], out["scores"], out["masks"], strict=True):
            entry = {"image_id": image_id, "category_id": int(label), "score": float(score)}
            if iou_type == "bbox":
                x1, y1, x2, y2 = box.tolist()
                entry["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                rle = mask_utils.encode(np.asfortranarray((mask[0] > 0.5).numpy().astype(np.uint8)))
                entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            results.append(entry)
    (root / f"results_{iou_type}.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(root / "val" / "annotations.json"))
        evaluation = COCOeval(truth, truth.loadRes(str(root / f"results_{iou_type}.json")), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return [float(evaluation.stats[i]) for i in STATS.values()]


def main() -> None:
    """Write the data, score it every way, print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--detections", type=int, default=30, help="Objects + detections per image (about).")
    parser.add_argument("--crowd", type=float, default=0.1, help="Share of objects that are crowd regions.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        found = write_data(root, args.images, args.size, args.detections, args.crowd, args.seed)
        dm = FujiApplesDataModule(root=root, class_names=CLASSES, min_size=args.size, max_size=args.size, num_workers=0)
        dm.setup("validate")
        batch = [dm.datasets["val"][i] for i in range(len(dm.datasets["val"]))]
        outputs = {int(t["image_id"]): as_outputs(found[int(t["image_id"])], args.size) for _, t in batch}
        rows = []
        started = time.perf_counter()
        ref = {t: reference(root, outputs, t) for t in ("bbox", "segm")}
        rows.append(("pycocotools COCOeval on the files (reference)", ref, time.perf_counter() - started))
        for backend in ("faster_coco_eval", "pycocotools"):
            metrics = DetectionMetrics(backend, class_names=CLASSES)
            started = time.perf_counter()
            for _, target in batch:
                metrics.update([outputs[int(target["image_id"])]], [target])
            result = metrics.compute()
            seconds = time.perf_counter() - started
            rows.append(
                (
                    f"Harvest DetectionMetrics, {backend}",
                    {t: [float(result[f"{t}/{n}"]) for n in STATS] for t in ("bbox", "segm")},
                    seconds,
                )
            )
        for extended in (False, True):
            tm = MeanAveragePrecision(iou_type=("bbox", "segm"), backend="faster_coco_eval", extended_summary=False)
            started = time.perf_counter()
            for _, target in batch:
                out = outputs[int(target["image_id"])]
                pred = {
                    "boxes": out["boxes"],
                    "labels": out["labels"],
                    "scores": out["scores"],
                    "masks": out["masks"][:, 0] > 0.5,
                }
                truth = {"boxes": target["boxes"], "labels": target["labels"], "masks": target["masks"].bool()}
                if extended:  # crowd regions and annotation areas given, as torchmetrics allows
                    anns = target["coco"]["annotations"]
                    crowd = [a for a in anns if a["iscrowd"]]
                    plain = [a for a in anns if not a["iscrowd"]]
                    crowd_masks = (
                        torch.from_numpy(
                            mask_utils.decode([a["segmentation"] for a in crowd]).transpose(2, 0, 1)
                        ).bool()
                        if crowd
                        else torch.zeros((0, args.size, args.size), dtype=torch.bool)
                    )
                    truth = {
                        "boxes": torch.tensor(
                            [
                                [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                                for a in plain + crowd
                            ],
                            dtype=torch.float32,
                        ).reshape(-1, 4),
                        "labels": torch.tensor([a["category_id"] for a in plain + crowd], dtype=torch.int64),
                        "masks": torch.cat([target["masks"].bool(), crowd_masks]),
                        "iscrowd": torch.tensor([0] * len(plain) + [1] * len(crowd)),
                        "area": torch.tensor([a["area"] for a in plain + crowd], dtype=torch.float32),
                    }
                tm.update([pred], [truth])
            result = tm.compute()
            seconds = time.perf_counter() - started
            keys = ["map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"]
            name = (
                "torchmetrics given iscrowd and area"
                if extended
                else "torchmetrics as Harvest used it (no crowd, mask areas)"
            )
            values = {t: [float(result[f"{t}_{k}"]) for k in keys] for t in ("bbox", "segm")}
            rows.append((name, values, seconds))
    print(f"{args.images} images of {args.size}x{args.size}, ", end="")
    print(f"about {args.detections} objects + detections each, {args.crowd:.0%} crowd")
    columns = ("segm mAP", "bbox mAP", "max |diff| segm", "max |diff| bbox", "seconds", "ratio")
    print(f"{'evaluation':58}", *(f"{c:>{max(9, len(c))}}" for c in columns))
    base = rows[1][2]
    for name, values, seconds in rows:
        diff = {t: max(abs(a - b) for a, b in zip(values[t], ref[t], strict=True)) for t in ("segm", "bbox")}
        cells = (f"{values['segm'][0]:9.4f}", f"{values['bbox'][0]:9.4f}", f"{diff['segm']:15.2e}")
        cells += (f"{diff['bbox']:15.2e}", f"{seconds:9.2f}", f"{seconds / base:9.2f}")
        print(f"{name:58}", *cells)


if __name__ == "__main__":
    main()
