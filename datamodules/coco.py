"""COCO instance-segmentation JSON (an annotation file + an image folder): polygons and RLE, crowd regions.

Crowd annotations (``iscrowd: 1``) are kept as COCO keeps them, for evaluation only: they are never
training targets. Each annotation's ``area`` and ``bbox`` are kept for the evaluation's size ranges;
images without annotations are negatives. Categories are matched to ``class_names`` by name.
Every message names the JSON file, the image id or annotation id, and the key at fault.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from datamodules.coco_truth import CocoInstance, CocoSample
from datamodules.instance_data import Instance, Sample, checked_polygon, image_size
from datamodules.via import AnnotationError


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot be read ({err}).") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(
            f"{path}: not valid JSON (line {err.lineno}: {err.msg}): re-export it."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise AnnotationError(
            f"{path}: not a COCO file (no 'images' list): export COCO instance segmentation."
        )
    if not isinstance(data.get("categories"), list) or not data["categories"]:
        raise AnnotationError(
            f"{path}: no 'categories' list, so no annotation has a class: export COCO with its categories "
            "(e.g. [{\"id\": 1, \"name\": \"apple\"}])."
        )
    return data


def _segmentation(
    ann: dict[str, Any], width: int, height: int, where: str
) -> list[list[float]] | dict[str, Any]:
    seg = ann.get("segmentation")
    if isinstance(seg, list) and seg:
        return [checked_polygon([float(v) for v in poly], width, height, where) for poly in seg]
    if isinstance(seg, dict) and "counts" in seg:
        if list(seg.get("size", [])) != [height, width]:
            raise AnnotationError(
                f"{where}: RLE size {seg.get('size')} differs from the image's [height, width] = "
                f"[{height}, {width}]."
            )
        return seg
    raise AnnotationError(
        f"{where}: no 'segmentation' (polygons or RLE): instance segmentation needs a mask."
    )


def _instance(ann: dict[str, Any], label: int, width: int, height: int, where: str) -> CocoInstance:
    bbox = ann.get("bbox")
    if bbox is not None and (not isinstance(bbox, list) or len(bbox) != 4):
        raise AnnotationError(f"{where}: 'bbox' is {bbox!r}, expected [x, y, width, height].")
    area = ann.get("area")
    if area is not None and not isinstance(area, (int, float)):
        raise AnnotationError(f"{where}: 'area' is {area!r}, expected a number of pixels.")
    return CocoInstance(
        label,
        _segmentation(ann, width, height, where),
        area=None if area is None else float(area),
        bbox=None if bbox is None else tuple(float(v) for v in bbox),
    )


def _labels(path: Path, data: dict[str, Any], class_names: list[str]) -> tuple[dict[Any, int], list[str]]:
    label_of: dict[Any, int] = {}
    problems: list[str] = []
    for cat in data["categories"]:
        if cat.get("name") in class_names[1:]:
            label_of[cat.get("id")] = class_names.index(cat["name"])
        else:
            problems.append(
                f"{path}: category {cat.get('name')!r} (id {cat.get('id')}) is not in data.class_names "
                f"{class_names}: add it there (after 'background') or rename the category."
            )
    return label_of, problems


def _image_sample(
    path: Path, image_dir: Path, img: dict[str, Any], anns: list[dict[str, Any]], label_of: dict[Any, int]
) -> CocoSample:
    image_id = img.get("id")
    if "file_name" not in img:
        raise AnnotationError(
            f"{path}: image id {image_id!r} has no 'file_name': add the image's file name, relative to "
            f"{image_dir}."
        )
    file = image_dir / str(img["file_name"])
    width, height = image_size(file)
    if (img.get("width", width), img.get("height", height)) != (width, height):
        raise AnnotationError(
            f"{path}: image id {image_id!r} ({file.name}) is listed as {img.get('width')}x{img.get('height')} "
            f"but the file is {width}x{height}: annotate the file as it is, or restore the original."
        )
    instances: list[Instance] = []
    crowd: list[Instance] = []
    for ann in anns:
        where = f"{path}, image id {image_id!r}, annotation id {ann.get('id')!r}"
        if "category_id" not in ann:
            raise AnnotationError(f"{where}: no 'category_id': give every annotation its category.")
        if ann["category_id"] not in label_of:
            raise AnnotationError(
                f"{where}: category id {ann['category_id']!r} is not a known class (see 'categories')."
            )
        instance = _instance(ann, label_of[ann["category_id"]], width, height, where)
        (crowd if ann.get("iscrowd", 0) else instances).append(instance)
    return CocoSample(
        file, path, width, height, instances, image_id=image_id if isinstance(image_id, int) else None,
        crowd=crowd,
    )  # fmt: skip


def read_coco(path: Path, image_dir: Path, class_names: list[str]) -> tuple[list[Sample], list[str]]:
    """Read a COCO instance-segmentation file.

    Args:
        path: The JSON file.
        image_dir: Folder that ``file_name`` entries are relative to.
        class_names: Class names, index 0 = background; categories are matched by name.

    Returns:
        The readable samples, and one message per problem (images with a problem are left out).

    Raises:
        AnnotationError: The file itself cannot be read as COCO (not JSON, no images, no categories).

    """
    data = _load(path)
    label_of, problems = _labels(path, data, class_names)
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []):
        if "image_id" not in ann:
            problems.append(f"{path}, annotation id {ann.get('id')!r}: no 'image_id': fix the export.")
            continue
        by_image[ann["image_id"]].append(ann)
    known_ids = {img.get("id") for img in data["images"]}
    for image_id in sorted(set(by_image) - known_ids, key=str):
        problems.append(
            f"{path}: annotations refer to image id {image_id!r}, which is not in 'images': fix the export."
        )
    samples: list[Sample] = []
    for img in data["images"]:
        try:
            samples.append(_image_sample(path, image_dir, img, by_image.get(img.get("id"), []), label_of))
        except AnnotationError as err:
            problems.append(str(err))
    return samples, problems
