"""The one image decoder of both pipelines: any image file to the RGB picture a person sees.

Every data module, check and sample grid decodes through :func:`read_rgb`, so an image looks the same
in training, evaluation, prediction, the dataset card and ``harvest data check``:

* EXIF orientation is applied (a phone photo stored sideways comes out upright);
* 16-bit images keep their range (``value / 257``; PIL's own conversion clips them to white);
* palette, grayscale, CMYK, YCbCr/LAB/HSV images become RGB; an alpha channel is dropped;
* a big JPEG is decoded at a reduced scale (libjpeg's DCT scaling, PIL's draft mode) when the caller
  only needs a smaller picture: ``min_side`` is the shorter side the caller needs.

What had to be converted is reported (:attr:`Decoded.conversions`) so ``harvest data check`` can warn.
A file that does not decode raises :class:`BadImageError`, one line naming the file, the cause and the fix.
:func:`check_images` decodes many files, in parallel processes where that pays.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from harvest.core.errors import first_line

log = logging.getLogger(__name__)

#: Exceptions PIL raises for files that are not (whole) images.
DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)

#: EXIF orientations that swap width and height.
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112

#: Below this many files a check runs in this process (starting workers costs more than it saves).
PARALLEL_MIN_FILES = 64


class BadImageError(ValueError):
    """An image file that cannot be decoded: a one-line message naming the file and the fix.

    Args:
        message: The message.
        path: The file.
        reason: What the decoder said, in one line.

    """

    def __init__(self, message: str, path: Path | str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path, self.reason = path, reason


def bad_image_message(path: Path | str, why: str) -> str:
    """One line naming an unreadable image, the reason and the fix."""
    return (
        f"{path}: cannot read image ({why}); replace or delete the file, "
        "or set data.init_args.on_bad_data: skip to leave such files out."
    )


@dataclass
class Decoded:
    """A decoded image, the file's upright full size and what had to be done to make it RGB.

    ``image`` is smaller than ``size`` when a JPEG was decoded at a reduced scale; ``conversions`` is
    empty for a plain 8-bit RGB file.
    """

    image: Image.Image
    size: tuple[int, int]
    conversions: tuple[str, ...] = ()


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1) or 1)
    except DECODE_ERRORS:  # a broken EXIF block: the pixels may still be fine
        return 1


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float64)
    # PIL widens 16-bit grayscale to 32-bit "I"; the file's range is 0..65535 (whatever PIL calls it)
    eight = np.clip(np.rint(pixels / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(eight).convert("RGB")  # uint8, two dimensions: mode "L"


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    mode = image.mode
    if mode == "RGB":
        return image, []
    if mode.startswith("I;16") or mode == "I":
        return _sixteen_bit_to_rgb(image), ["16-bit grayscale scaled to 8 bits"]
    if mode == "F":
        return image.convert("L").convert("RGB"), ["32-bit float grayscale clipped to 0..255"]
    if mode == "P":
        has_alpha = "transparency" in image.info
        rgb = image.convert("RGBA" if has_alpha else "RGB").convert("RGB")
        return rgb, ["palette expanded to RGB" + (", transparency dropped" if has_alpha else "")]
    if mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        kind = {"L": "grayscale to RGB, ", "P": "palette expanded to RGB, "}.get(mode[0], "")
        return image.convert("RGB"), [kind + "alpha channel dropped"]
    if mode in ("L", "1"):
        return image.convert("RGB"), ["grayscale to RGB" if mode == "L" else "1-bit to RGB"]
    return image.convert("RGB"), [f"{mode} to RGB"]


def read_rgb(path: Path | str, min_side: int | None = None) -> Decoded:
    """Decode ``path`` as upright 8-bit RGB; raise :class:`BadImageError` naming the file.

    Args:
        path: Image file (JPEG, PNG, or anything PIL reads).
        min_side: Shorter side the caller needs at least; a JPEG is then decoded at the smallest
            of 1/2, 1/4, 1/8 scale that keeps its shorter side at or above it. ``None``: full size.

    """
    try:
        with Image.open(path) as image:
            conversions = []
            full = image.size
            if min_side and image.format == "JPEG":
                image.draft(image.mode if image.mode in ("RGB", "L") else None, (min_side, min_side))
            image.load()
            orientation = _orientation(image)
            if orientation != 1:
                image = ImageOps.exif_transpose(image)
                conversions.append(f"EXIF orientation {orientation} applied")
            if orientation in _TRANSPOSED:
                full = (full[1], full[0])
            rgb, converted = _to_rgb(image)
            return Decoded(rgb, full, tuple(conversions + converted))
    except DECODE_ERRORS as error:
        raise BadImageError(bad_image_message(path, first_line(error)), path, first_line(error)) from None


def upright_size(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the upright image (EXIF orientation applied), from the header only."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return (height, width) if _orientation(image) in _TRANSPOSED else (width, height)
    except DECODE_ERRORS as error:
        raise BadImageError(bad_image_message(path, first_line(error)), path, first_line(error)) from None


def probe(path: Path | str) -> tuple[str | None, tuple[str, ...]]:
    """Decode the whole file (a truncated one passes a header read): ``(why it fails or None, conversions)``."""
    try:
        # 1/8 scale still reads every byte of a JPEG's entropy-coded data, at a fraction of the cost
        return None, read_rgb(path, min_side=1).conversions
    except BadImageError as error:
        return error.reason, ()


def idle_cpus() -> int:
    """CPUs this process may use that other work leaves idle (by the 1-minute load average), at least one.

    On busy cores more processes only compete: ``benchmarks/data_throughput.py`` measured a check in two
    processes slower than in one at a load average of 11 on two cores.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, round(cpus + 1 - os.getloadavg()[0])))  # + 1: this process is in the load


def _probe_many(paths: list[str]) -> list[tuple[str | None, tuple[str, ...]]]:
    return [probe(p) for p in paths]


def check_images(paths: Iterable[Path], workers: int | None = None) -> dict[Path, tuple[str | None, tuple[str, ...]]]:
    """Probe every file: ``{path: (why it does not decode or None, conversions)}``, in input order.

    Args:
        paths: Image files.
        workers: Processes to decode in; default: :func:`idle_cpus` (one when there are fewer than
            :data:`PARALLEL_MIN_FILES` files: starting workers would cost more than they save).

    """
    paths = list(paths)
    if workers is None:
        workers = idle_cpus() if len(paths) >= PARALLEL_MIN_FILES else 1
    if workers <= 1:
        return dict(zip(paths, _probe_many([str(p) for p in paths]), strict=True))
    chunks = [[str(p) for p in paths[i::workers]] for i in range(workers)]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_probe_many, chunks))
    out: dict[Path, tuple[str | None, tuple[str, ...]]] = {}
    for i in range(len(paths)):
        out[paths[i]] = results[i % workers][i // workers]
    return out
