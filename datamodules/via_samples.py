"""VIA exports of a folder of images read into samples: one export for the folder, or one per image.

Fuji-SfM ships one CSV per image (``mask_<image stem>.csv``); VIA itself writes one CSV or JSON for a
whole project. Both are read the same way: every VIA export in the folder (or the one file named),
each region an instance. ``point`` and ``polyline`` regions enclose no area: they are reported (count
and file) and left out. With ``class_attribute`` set, that region attribute names each region's class.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from datamodules.instance_data import Instance, Sample, checked_polygon, image_size
from datamodules.via import AnnotationError, ViaRegion, is_via_export, read_via

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def via_exports(path: Path) -> list[Path]:
    """The VIA exports at ``path``: the file itself, or every CSV and every VIA JSON in the folder."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.glob("*") if p.is_file())
    return [p for p in files if p.suffix.lower() == ".csv" or (p.suffix.lower() == ".json" and is_via_export(p))]


def _class_name(value: Any) -> str | None:
    """A region attribute's value as a class name: text, or the one ticked option of a checkbox."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        ticked = [k for k, v in value.items() if v]
        return ticked[0] if len(ticked) == 1 else None
    return None


def region_label(region: ViaRegion, class_names: list[str], class_attribute: str | None) -> int:
    """The class index of a region: 1 without ``class_attribute``, else the class its attribute names."""
    if class_attribute is None:
        return 1
    name = _class_name(region.attributes.get(class_attribute))
    if name is None:
        raise AnnotationError(
            f"{region.where}: region attribute {class_attribute!r} is {region.attributes.get(class_attribute)!r}, "
            f"not a class name: name its class (one of {class_names[1:]}) in VIA."
        )
    if name not in class_names[1:]:
        raise AnnotationError(
            f"{region.where}: class {name!r} (region attribute {class_attribute!r}) is not in data.class_names "
            f"{class_names}: add it there (after 'background') or rename it in VIA."
        )
    return class_names.index(name)


def _non_area_problem(export: Path, regions: list[ViaRegion]) -> str:
    counts = Counter(r.shape for r in regions)
    shapes = " and ".join(f"{n} {shape}" for shape, n in sorted(counts.items()))
    return (
        f"{export}: {shapes} region(s) enclose no area, so they give no mask (first: {regions[0].where}): "
        "redraw them as polygons, or leave them out with data.on_bad_data=skip."
    )


def _missing_annotation(image: Path, exports: list[Path]) -> str:
    if all(p.name.startswith("mask_") for p in exports):  # Fuji-SfM: one CSV per image
        expected = f"expected {image.parent / ('mask_' + image.stem + '.csv')}"
    else:
        expected = f"not in {', '.join(p.name for p in exports)}"
    return (
        f"{image}: no annotations ({expected}): annotate it in VIA (no regions = an image without objects) "
        "or move it out of the folder."
    )


def read_via_samples(
    annotations: Path, image_dir: Path, class_names: list[str], class_attribute: str | None = None
) -> tuple[list[Sample], list[str]]:
    """Read VIA exports into samples, and problems as one-line messages (those images or regions left out).

    Args:
        annotations: A VIA export (CSV or JSON) or a folder of them.
        image_dir: Folder that the exports' file names are relative to.
        class_names: Class names, index 0 = background.
        class_attribute: Region attribute naming each region's class; without it every region is class 1.

    """
    problems: list[str] = []
    exports = via_exports(annotations)
    annotated: dict[Path, tuple[Path, list[ViaRegion]]] = {}
    unreadable: set[str] = set()  # stems of images whose CSV failed: reported once, as the CSV's problem
    for export in exports:
        try:
            per_image = read_via(export)
        except AnnotationError as err:
            problems.append(str(err))
            unreadable.add(export.stem.removeprefix("mask_"))
            continue
        flat = [r for regions in per_image.values() for r in regions if r.polygon is None]
        if flat:
            problems.append(_non_area_problem(export, flat))
        for filename, regions in per_image.items():
            image = image_dir / filename
            if image in annotated:
                problems.append(f"{export}: {filename} is also annotated in {annotated[image][0].name}: keep one.")
            annotated[image] = (export, [r for r in regions if r.polygon is not None])
    samples: list[Sample] = []
    for image, (export, regions) in sorted(annotated.items()):
        if not image.is_file():
            problems.append(f"{export}: names image {image.name}, which is missing: restore it or delete its rows.")
            continue
        try:
            width, height = image_size(image)
            instances = [
                Instance(
                    region_label(r, class_names, class_attribute),
                    [checked_polygon(r.polygon, width, height, r.where)],
                )
                for r in regions
            ]
        except AnnotationError as err:
            problems.append(str(err))
            continue
        samples.append(Sample(image, export, width, height, instances))
    if image_dir.is_dir():
        for image in sorted(image_dir.iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES and image not in annotated and image.stem not in unreadable:
                problems.append(_missing_annotation(image, exports))
    return samples, problems
