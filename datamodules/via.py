"""VGG Image Annotator (VIA) exports as VIA writes them: CSV or JSON, VIA 1.x and 2.x, every region shape.

* CSV (``Annotation > Export as CSV``): the columns ``filename,file_size,file_attributes,region_count,
  region_id,region_shape_attributes,region_attributes`` (VIA 1.x writes ``#filename``), one row per
  region, ``region_shape_attributes`` quoted JSON; an image without regions is one row with
  ``region_count`` 0 and ``{}`` as shape. One file may hold one image (Fuji-SfM's ``mask_*.csv``) or a
  whole folder.
* JSON (``Export as JSON``, or a saved VIA 2 project with ``_via_img_metadata``): ``{key: {"filename",
  "size", "regions", "file_attributes"}}``, ``regions`` a dict (VIA 1.x) or a list (VIA 2.x).

Area shapes (``polygon``, ``rect``, ``circle``, ``ellipse``) become polygons (rasterised into masks
later); ``point`` and ``polyline`` regions enclose no area: they are returned with no polygon, for the
reader to report. ``region_attributes`` are kept, so one attribute can name the class.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

VIA_COLUMNS = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)
AREA_SHAPES = ("polygon", "rect", "circle", "ellipse")
NON_AREA_SHAPES = ("point", "polyline")
_ELLIPSE_POINTS = 32


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message names the file, the problem and the fix."""


class ViaRegion(NamedTuple):
    """One region: where it is (for messages), its shape, its flat polygon (``None``: no area), attributes."""

    where: str
    shape: str
    polygon: list[float] | None
    attributes: dict[str, Any]


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
    """Turn a VIA area shape into a flat ``[x0, y0, x1, y1, …]`` polygon; ``None`` for point and polyline.

    Args:
        shape: The parsed ``region_shape_attributes`` (``shape_attributes`` in JSON).
        where: ``"<file>, row <n>"`` or ``"<file>, image <name>, region <i>"``, used in error messages.

    """
    name = shape.get("name")
    try:
        if name in NON_AREA_SHAPES:
            return None
        if name == "polygon":
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
        raise AnnotationError(f"{where}: {name} region lacks {missing}: re-export it from VIA.") from None
    except (TypeError, ValueError) as bad:
        raise AnnotationError(
            f"{where}: {name} region has a non-numeric coordinate ({bad}): fix it in VIA."
        ) from None
    raise AnnotationError(
        f"{where}: region shape {name!r} is not supported: draw objects as polygon, rect, circle or ellipse."
    )


def _region(shape: Any, attributes: Any, where: str) -> ViaRegion | None:
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where}: region shape must be a JSON object, got {shape!r}.")
    if not shape:
        return None
    attributes = attributes if isinstance(attributes, dict) else {}
    return ViaRegion(where, str(shape.get("name")), shape_to_polygon(shape, where), attributes)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(
            f"{path}: cannot be read as a UTF-8 text file ({err}): re-export it from VIA."
        ) from None
    if not text.strip():
        raise AnnotationError(
            f"{path}: empty annotation file: re-export it from VIA (an image without objects has one row with "
            "region_count 0), or delete it together with its image."
        )
    return text


def read_via_csv(path: Path) -> dict[str, list[ViaRegion]]:
    """Read one VIA CSV export (VIA 1.x or 2.x).

    Returns:
        Image file name -> its regions (an empty list for an image without regions).

    Raises:
        AnnotationError: The file is empty, is not a VIA CSV, or has a malformed row; the message names
            the file and the row.

    """
    rows = csv.reader(io.StringIO(_read_text(path)))
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
            attributes = json.loads(row[col["region_attributes"]] or "{}")
        except json.JSONDecodeError as err:
            raise AnnotationError(
                f"{where}: region_shape_attributes or region_attributes is not valid JSON ({err.msg})."
            ) from None
        regions = images.setdefault(row[col["filename"]].strip(), [])
        if (region := _region(shape, attributes, where)) is not None:
            regions.append(region)
    return images


def _via_entries(data: Any, path: Path) -> list[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("_via_img_metadata"), dict):
        data = data["_via_img_metadata"]  # a VIA 2 project file
    if isinstance(data, dict) and "images" in data and "annotations" in data:
        raise AnnotationError(f"{path}: a COCO file, not a VIA export: set data.format=coco (or auto).")
    entries = list(data.values()) if isinstance(data, dict) else None
    if not entries or not all(isinstance(e, dict) and "filename" in e and "regions" in e for e in entries):
        raise AnnotationError(
            f"{path}: not a VIA JSON export (expected {{key: {{'filename', 'regions', …}}}} or a VIA 2 project "
            "with '_via_img_metadata'): export annotations as JSON from VIA 1.x or 2.x."
        )
    return entries


def read_via_json(path: Path) -> dict[str, list[ViaRegion]]:
    """Read one VIA JSON export or VIA 2 project file; same result as :func:`read_via_csv`."""
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON (line {err.lineno}: {err.msg}): re-export it.") from None
    images: dict[str, list[ViaRegion]] = {}
    for entry in _via_entries(data, path):
        filename = str(entry["filename"]).strip()
        raw = entry["regions"]
        listed = raw.values() if isinstance(raw, dict) else raw if isinstance(raw, list) else None
        if listed is None:
            raise AnnotationError(f"{path}, image {filename}: 'regions' is {raw!r}, expected a list or a dict.")
        regions = images.setdefault(filename, [])
        for index, region in enumerate(listed):
            where = f"{path}, image {filename}, region {index}"
            if not isinstance(region, dict) or "shape_attributes" not in region:
                raise AnnotationError(f"{where}: no 'shape_attributes': re-export it from VIA.")
            found = _region(region["shape_attributes"], region.get("region_attributes", {}), where)
            if found is not None:
                regions.append(found)
    return images


def read_via(path: Path) -> dict[str, list[ViaRegion]]:
    """Read a VIA export, CSV or JSON by its suffix."""
    return read_via_json(path) if path.suffix.lower() == ".json" else read_via_csv(path)


def is_via_export(path: Path) -> bool:
    """Whether ``path`` looks like a VIA export: a CSV with VIA's header, or a JSON of VIA's shape."""
    try:
        if path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8-sig") as handle:
                header = handle.readline()
            return all(column in header for column in VIA_COLUMNS)
        if path.suffix.lower() == ".json":
            _via_entries(json.loads(path.read_text(encoding="utf-8-sig")), path)
            return True
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AnnotationError):
        return False
    return False
