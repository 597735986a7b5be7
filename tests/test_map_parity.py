"""The metrics Harvest logs equal pycocotools' COCOeval run on the COCO files themselves.

A COCO ground truth written as annotation tools write it: four 200x150 images, three categories with
non-contiguous ids, polygon annotations whose ``area`` is the polygon's area (not the rasterised
mask's: one pear is 'small' by its polygon area and 'medium' by its mask), crowd regions (uncompressed
RLE, ``iscrowd: 1``) with detections on them, and a negative image. Detections (good, shifted,
duplicate, wrong class, on a crowd region, false positive, missed objects) are written as COCO result
files and scored by ``pycocotools.COCOeval``; the same detections, as the detector hands them over,
go through Harvest's data module (its COCO reader) and :class:`DetectionMetrics`, with both backends.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from datamodules import FujiApplesDataModule
from lightning_modules.coco_evaluation import precision_recall_f1
from lightning_modules.detection_metrics import DetectionMetrics

H, W = 150, 200
CATEGORIES = {3: "apple", 5: "pear", 9: "leaf"}
CLASS_NAMES = ["background", "leaf", "apple", "pear"]  # another order than the file's ids
STATS = {"mAP": 0, "mAP50": 1, "mAP75": 2, "mAP_small": 3, "mAP_medium": 4, "mAP_large": 5, "mAR100": 8}


def ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 24) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [float(round(v, 2)) for a in angles for v in (cx + rx * np.cos(a), cy + ry * np.sin(a))]


def rectangle(x: float, y: float, w: float, h: float) -> list[float]:
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def polygon_area(poly: list[float]) -> float:
    xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def crowd_rle(x: int, y: int, w: int, h: int) -> dict:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    counts, previous, run = [], 0, 0
    for value in mask.flatten(order="F"):  # uncompressed RLE as COCO's crowd annotations have it
        if value != previous:
            counts.append(run)
            previous, run = value, 0
        run += 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


#: image id -> [(category id, polygon or crowd RLE)]
TRUTH = {
    11: [
        (3, ellipse(50, 50, 30, 25)),  # large apple
        (5, rectangle(120.2, 20.5, 40.4, 25.3)),  # pear: polygon area 1022 (small), mask area 1025 (medium)
        (3, crowd_rle(150, 90, 45, 50)),  # a crowd of apples
    ],
    12: [
        (3, ellipse(30, 30, 8, 7)),  # small apple
        (3, ellipse(100, 80, 22, 20)),  # medium apple
        (9, ellipse(160, 40, 25, 12)),  # leaf
        (5, crowd_rle(5, 100, 60, 45)),  # a crowd of pears
    ],
    13: [],  # a negative image
    14: [(9, ellipse(40, 90, 35, 18)), (3, ellipse(130, 75, 62, 52))],  # a leaf, a large apple
}


def poly_mask(poly: list[float]) -> np.ndarray:
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], H, W)))


def box_mask(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[y : y + h, x : x + w] = 1
    return mask


#: image id -> [(category id, mask, box xyxy, score)]
DETECTIONS = {
    11: [
        (3, poly_mask(ellipse(52, 51, 29, 25)), [22, 26, 82, 76], 0.95),
        (3, poly_mask(ellipse(60, 55, 30, 25)), [30, 30, 90, 80], 0.55),  # a shifted duplicate
        (5, box_mask(121, 21, 40, 24), [121, 21, 161, 45], 0.85),
        (3, box_mask(155, 95, 30, 30), [155, 95, 185, 125], 0.9),  # on the crowd: ignored
        (9, box_mask(10, 110, 30, 30), [10, 110, 40, 140], 0.7),  # false positive
    ],
    12: [
        (3, poly_mask(ellipse(31, 30, 8, 7)), [22.5, 23, 39.5, 37], 0.6),
        (5, poly_mask(ellipse(100, 80, 22, 20)), [78, 60, 122, 100], 0.8),  # the medium apple as a pear
        (3, poly_mask(ellipse(104, 84, 20, 20)), [84, 64, 124, 104], 0.45),
        (5, box_mask(10, 105, 20, 20), [10, 105, 30, 125], 0.65),  # on the pear crowd: ignored
        (9, poly_mask(ellipse(158, 41, 25, 12)), [133, 29, 183, 53], 0.3),
    ],
    13: [(3, box_mask(100, 60, 40, 40), [100, 60, 140, 100], 0.75)],
    14: [(3, poly_mask(ellipse(128, 74, 60, 52)), [68, 22, 188, 126], 0.99)],  # the leaf is missed
}


def write_ground_truth(root: Path) -> Path:
    """The COCO files of train and val (the same) in a ``train/`` + ``val/`` layout, with the images."""
    images, annotations = [], []
    for image_id, objects in TRUTH.items():
        images.append({"id": image_id, "file_name": f"img_{image_id}.jpg", "width": W, "height": H})
        for category, shape in objects:
            ann = {"id": len(annotations) + 100, "image_id": image_id, "category_id": category}
            if isinstance(shape, dict):
                rle = mask_utils.frPyObjects(shape, H, W)
                ann.update(segmentation=shape, iscrowd=1, area=float(mask_utils.area(rle)))
                ann["bbox"] = mask_utils.toBbox(rle).tolist()
            else:
                xs, ys = shape[0::2], shape[1::2]
                ann.update(segmentation=[shape], iscrowd=0, area=polygon_area(shape))
                ann["bbox"] = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append(ann)
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in CATEGORIES.items()],
    }
    for split in ("train", "val"):
        folder = root / split
        (folder / "images").mkdir(parents=True)
        for image in images:
            Image.new("RGB", (W, H), (90, 120, 60)).save(folder / "images" / image["file_name"])
        (folder / "annotations.json").write_text(json.dumps(data))
    return root / "val" / "annotations.json"


def write_results(root: Path) -> dict[str, Path]:
    """COCO result files, one per IoU type (boxes alone, masks alone), as detectron2 writes them."""
    files = {}
    for iou_type in ("bbox", "segm"):
        results = []
        for image_id, detections in DETECTIONS.items():
            for category, mask, (x1, y1, x2, y2), score in detections:
                entry = {"image_id": image_id, "category_id": category, "score": score}
                if iou_type == "bbox":
                    entry["bbox"] = [x1, y1, x2 - x1, y2 - y1]
                else:
                    rle = mask_utils.encode(np.asfortranarray(mask))
                    entry["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
                results.append(entry)
        files[iou_type] = root / f"results_{iou_type}.json"
        files[iou_type].write_text(json.dumps(results))
    return files


def cocoeval_on_files(truth_file: Path, results_file: Path, iou_type: str) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(truth_file))
        evaluation = COCOeval(truth, truth.loadRes(str(results_file)), iou_type)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation


def harvest_metrics(root: Path, backend: str) -> dict[str, float]:
    """What MaskRCNNModule logs: the data module's validation targets and the detector's outputs."""
    dm = FujiApplesDataModule(root=root, class_names=CLASS_NAMES, min_size=H, max_size=W, num_workers=0)
    dm.setup("validate")
    label = {file_id: CLASS_NAMES.index(name) for file_id, name in CATEGORIES.items()}
    metrics = DetectionMetrics(backend=backend, class_names=CLASS_NAMES)
    dataset = dm.datasets["val"]
    for start in (0, 2):  # two batches, as validation sends them
        batch = [dataset[i] for i in range(start, start + 2)]
        detections = []
        for image, target in batch:
            assert image.shape[-2:] == (H, W)
            found = DETECTIONS[int(target["image_id"])]
            detections.append(
                {
                    "boxes": torch.tensor([d[2] for d in found], dtype=torch.float32).reshape(-1, 4),
                    "labels": torch.tensor([label[d[0]] for d in found], dtype=torch.int64),
                    "scores": torch.tensor([d[3] for d in found]),
                    "masks": torch.from_numpy(np.stack([d[1] for d in found]).astype(np.float32))[:, None] * 0.9,
                }
            )
        metrics.update(detections, [t for _, t in batch])
    return {k: float(v) for k, v in metrics.compute().items()}


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_metrics_equal_pycocotools_cocoeval_on_the_files(tmp_path: Path, backend: str) -> None:
    truth_file = write_ground_truth(tmp_path / "data")
    results = write_results(tmp_path)
    ours = harvest_metrics(tmp_path / "data", backend)
    for iou_type in ("bbox", "segm"):
        reference = cocoeval_on_files(truth_file, results[iou_type], iou_type)
        for name, index in STATS.items():
            assert ours[f"{iou_type}/{name}"] == pytest.approx(reference.stats[index], abs=1e-6), (iou_type, name)
        assert 0 < reference.stats[0] < reference.stats[1] < 1 and min(reference.stats[3:6]) > 0
        precision = reference.eval["precision"]  # [T, R, K, A, M], K in the order of the sorted category ids
        for k, category in enumerate(sorted(CATEGORIES)):
            values = precision[:, :, k, 0, -1]
            expected = float(values[values > -1].mean())
            assert ours[f"{iou_type}/{CATEGORIES[category]}/mAP"] == pytest.approx(expected, abs=1e-6)
    assert ours["bbox/mAP"] != ours["segm/mAP"]


def test_crowd_regions_and_polygon_areas_change_the_numbers(tmp_path: Path) -> None:
    """Without crowd regions or with mask areas, COCOeval gives other numbers: the test above can fail."""
    truth_file = write_ground_truth(tmp_path / "data")
    results = write_results(tmp_path)
    exact = cocoeval_on_files(truth_file, results["segm"], "segm").stats
    data = json.loads(truth_file.read_text())
    no_crowd = {**data, "annotations": [a for a in data["annotations"] if not a["iscrowd"]]}
    (tmp_path / "no_crowd.json").write_text(json.dumps(no_crowd))
    assert cocoeval_on_files(tmp_path / "no_crowd.json", results["segm"], "segm").stats[0] < exact[0] - 1e-3
    for ann in data["annotations"]:
        ann["area"] = float(poly_mask(ann["segmentation"][0]).sum()) if not ann["iscrowd"] else ann["area"]
    (tmp_path / "mask_areas.json").write_text(json.dumps(data))
    assert cocoeval_on_files(tmp_path / "mask_areas.json", results["segm"], "segm").stats[3] != pytest.approx(exact[3])


def test_precision_recall_f1_per_class_at_iou_half(tmp_path: Path) -> None:
    write_ground_truth(tmp_path / "data")
    ours = harvest_metrics(tmp_path / "data", "faster_coco_eval")
    # scoring >= 0.5, masks at IoU 0.5. apple: hits on images 11, 12 (small), 14; the shifted duplicate,
    # and the box on the negative image are false positives; the detection on the apple crowd is
    # ignored; the medium apple of image 12 is missed (detected as a pear) -> TP 3, FP 2, FN 1.
    # pear: the pear of image 11 hit, the medium apple as a pear a false positive, the one on the pear
    # crowd ignored -> TP 1, FP 1, FN 0. leaf: image 11's false positive; both leaves missed (0.3 < 0.5).
    expected = {"apple": (3, 2, 1), "pear": (1, 1, 0), "leaf": (0, 1, 2)}
    for name, counts in expected.items():
        for metric, value in precision_recall_f1(*counts).items():
            assert ours[f"segm/{name}/{metric}"] == pytest.approx(value), (name, metric)
    total = precision_recall_f1(4, 4, 3)
    assert {k: ours[f"segm/{k}"] for k in total} == pytest.approx(total)


def test_targets_without_a_coco_ground_truth_are_scored_against_their_masks() -> None:
    mask = torch.from_numpy(box_mask(20, 30, 40, 50))[None]
    target = {"boxes": torch.tensor([[20.0, 30.0, 60.0, 80.0]]), "labels": torch.tensor([1]), "masks": mask}
    detection = {
        "boxes": torch.tensor([[20.0, 30.0, 60.0, 80.0], [100.0, 10.0, 120.0, 30.0]]),
        "labels": torch.tensor([1, 1]),
        "scores": torch.tensor([0.9, 0.8]),
        "masks": torch.stack([mask.float(), torch.from_numpy(box_mask(100, 10, 20, 20))[None].float()]),
    }
    metrics = DetectionMetrics(backend="pycocotools")
    metrics.update([detection], [target])
    result = metrics.compute()
    assert float(result["segm/mAP"]) == pytest.approx(1.0) and float(result["bbox/precision50"]) == 0.5
    assert "segm/1/mAP" not in result  # one class: no per-class rows repeating the totals


def _rank_metrics(rank: int, root: Path, port: int) -> None:
    """One of two processes: its share of the images (rank 1 repeats one, as a distributed sampler pads)."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        share = {0: [0, 2], 1: [1, 3, 0]}[rank]
        dm = FujiApplesDataModule(root=root, class_names=CLASS_NAMES, min_size=H, max_size=W, num_workers=0)
        dm.setup("validate")
        metrics = DetectionMetrics(backend="faster_coco_eval", class_names=CLASS_NAMES)
        label = {file_id: CLASS_NAMES.index(name) for file_id, name in CATEGORIES.items()}
        for index in share:
            image, target = dm.datasets["val"][index]
            found = DETECTIONS[int(target["image_id"])]
            detection = {
                "boxes": torch.tensor([d[2] for d in found], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([label[d[0]] for d in found], dtype=torch.int64),
                "scores": torch.tensor([d[3] for d in found]),
                "masks": torch.from_numpy(np.stack([d[1] for d in found]).astype(np.float32))[:, None],
            }
            metrics.update([detection], [target])
        result = {k: float(v) for k, v in metrics.compute().items()}
        (root / f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 45 s on two busy cores
def test_two_processes_score_every_image_once(tmp_path: Path) -> None:
    import socket

    write_ground_truth(tmp_path / "data")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    torch.multiprocessing.spawn(_rank_metrics, args=(tmp_path / "data", port), nprocs=2)
    alone = harvest_metrics(tmp_path / "data", "faster_coco_eval")
    for rank in (0, 1):
        assert json.loads((tmp_path / "data" / f"rank{rank}.json").read_text()) == pytest.approx(alone, abs=1e-9)
