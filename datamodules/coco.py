"""COCO instance-segmentation JSON (``annotations.json`` + an image folder): polygons and RLE.

Crowd annotations (``iscrowd: 1``) are left out, as torchvision's detection references do; images
without annotations are negatives. Categories are matched to ``class_names`` by name.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

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
    raise AnnotationError(f"{where}: no segmentation (polygons or RLE): instance segmentation needs a mask.")


def read_coco(path: Path, image_dir: Path, class_names: list[str]) -> tuple[list[Sample], list[str]]:
    """Read a COCO instance-segmentation file.

    Args:
        path: The JSON file.
        image_dir: Folder that ``file_name`` entries are relative to.
        class_names: Class names, index 0 = background; categories are matched by name.

    Returns:
        The readable samples, and one message per problem (images with a problem are left out).

    Raises:
        AnnotationError: The file itself cannot be read as COCO.

    """
    data = _load(path)
    label_of: dict[Any, int] = {}
    problems: list[str] = []
    for cat in data.get("categories", []):
        if cat.get("name") in class_names[1:]:
            label_of[cat.get("id")] = class_names.index(cat["name"])
        else:
            problems.append(
                f"{path}: category {cat.get('name')!r} (id {cat.get('id')}) is not in data.class_names "
                f"{class_names}: add it there (after 'background') or rename the category."
            )
    by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in data.get("annotations", []):
        by_image[ann.get("image_id")].append(ann)
    known_ids = {img.get("id") for img in data["images"]}
    for image_id in set(by_image) - known_ids:
        problems.append(
            f"{path}: annotations refer to image id {image_id!r}, which is not in 'images': fix the export."
        )

    samples: list[Sample] = []
    for img in data["images"]:
        file = image_dir / str(img.get("file_name", ""))
        try:
            width, height = image_size(file)
            if (img.get("width", width), img.get("height", height)) != (width, height):
                raise AnnotationError(
                    f"{path}: image {file.name} is listed as {img.get('width')}x{img.get('height')} but "
                    f"the file is {width}x{height}: annotate the file as it is, or restore the original."
                )
            instances = []
            for ann in by_image.get(img.get("id"), []):
                where = f"{path}, annotation id {ann.get('id')}"
                if ann.get("iscrowd", 0):
                    continue
                if ann.get("category_id") not in label_of:
                    raise AnnotationError(
                        f"{where}: category id {ann.get('category_id')} is not a known class."
                    )
                instances.append(
                    Instance(label_of[ann["category_id"]], _segmentation(ann, width, height, where))
                )
        except AnnotationError as err:
            problems.append(str(err))
            continue
        samples.append(Sample(file, path, width, height, instances))
    return samples, problems
