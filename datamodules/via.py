"""VGG Image Annotator (VIA) CSV exports, as Fuji-SfM ships them: one polygon region per row.

A VIA CSV has the columns ``filename,file_size,file_attributes,region_count,region_id,
region_shape_attributes,region_attributes``; ``region_shape_attributes`` is quoted JSON such as
``{"name":"polygon","all_points_x":[…],"all_points_y":[…]}``. An image without regions is one row
with ``region_count`` 0 and ``{}`` as shape. Rectangles, circles and ellipses are turned into polygons.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import NamedTuple

VIA_COLUMNS = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)
_ELLIPSE_POINTS = 32


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file, the problem and the fix."""


class ViaRegion(NamedTuple):
    """One annotated region: where it is in the file (for messages) and its flat ``[x0, y0, …]`` polygon."""

    where: str
    polygon: list[float]


def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0) -> list[float]:
    points: list[float] = []
    for k in range(_ELLIPSE_POINTS):
        a = 2 * math.pi * k / _ELLIPSE_POINTS
        x, y = rx * math.cos(a), ry * math.sin(a)
        points += [
            cx + x * math.cos(theta) - y * math.sin(theta),
            cy + x * math.sin(theta) + y * math.cos(theta),
        ]
    return points


def shape_to_polygon(shape: dict, where: str) -> list[float] | None:
    """Turn a VIA region shape into a flat ``[x0, y0, x1, y1, …]`` polygon; ``None`` for ``{}``.

    Args:
        shape: The parsed ``region_shape_attributes``.
        where: ``"<file>, row <n>"``, used in error messages.

    """
    if not shape:
        return None
    name = shape.get("name")
    try:
        if name in ("polygon", "polyline"):
            xs, ys = shape["all_points_x"], shape["all_points_y"]
            if len(xs) != len(ys):
                raise AnnotationError(
                    f"{where}: polygon has {len(xs)} x but {len(ys)} y coordinates: fix or delete this "
                    "region in VIA."
                )
            return [float(v) for xy in zip(xs, ys, strict=True) for v in xy]
        if name == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            return [x, y, x + w, y, x + w, y + h, x, y + h]
        if name == "circle":
            return _ellipse(float(shape["cx"]), float(shape["cy"]), float(shape["r"]), float(shape["r"]))
        if name == "ellipse":
            cx, cy, rx, ry = (float(shape[k]) for k in ("cx", "cy", "rx", "ry"))
            return _ellipse(cx, cy, rx, ry, float(shape.get("theta", 0.0)))
    except KeyError as missing:
        raise AnnotationError(
            f"{where}: {name} region lacks {missing}: re-export the CSV from VIA."
        ) from None
    except (TypeError, ValueError) as bad:
        raise AnnotationError(
            f"{where}: {name} region has a non-numeric coordinate ({bad}): fix it in VIA."
        ) from None
    raise AnnotationError(
        f"{where}: region shape {name!r} is not supported: draw apples as polygon, rect, circle or ellipse."
    )


def read_via_csv(path: Path) -> dict[str, list[ViaRegion]]:
    """Read one VIA CSV export.

    Args:
        path: The CSV file.

    Returns:
        Image file name -> its regions (an empty list for an image without regions).

    Raises:
        AnnotationError: The file is empty, is not a VIA CSV, or has a malformed row; the message names
            the file and the row.

    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(
            f"{path}: cannot be read as a UTF-8 text file ({err}): re-export it from VIA."
        ) from None
    if not text.strip():
        raise AnnotationError(
            f"{path}: empty annotation file: re-export it from VIA (an image without apples has one row with "
            "region_count 0), or delete it together with its image."
        )
    rows = csv.reader(io.StringIO(text))
    header = [h.strip().lstrip("#") for h in next(rows)]
    missing = [c for c in VIA_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(
            f"{path}: not a VIA CSV export, the header lacks {', '.join(missing)}: export annotations as "
            "CSV from VIA."
        )
    col = {name: header.index(name) for name in VIA_COLUMNS}
    images: dict[str, list[ViaRegion]] = {}
    for number, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}, row {number}"
        if len(row) < len(header):
            raise AnnotationError(
                f"{where}: {len(row)} fields instead of {len(header)}: check the quoting of its JSON."
            )
        try:
            shape = json.loads(row[col["region_shape_attributes"]] or "{}")
        except json.JSONDecodeError as err:
            raise AnnotationError(
                f"{where}: region_shape_attributes is not valid JSON ({err.msg})."
            ) from None
        if not isinstance(shape, dict):
            raise AnnotationError(f"{where}: region_shape_attributes must be a JSON object, got {shape!r}.")
        regions = images.setdefault(row[col["filename"]].strip(), [])
        polygon = shape_to_polygon(shape, where)
        if polygon is not None:
            regions.append(ViaRegion(where, polygon))
    return images
