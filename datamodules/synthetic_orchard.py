"""A small synthetic orchard written in the Fuji-SfM layout, so demos and tests run the real parser.

Images of leafy canopy with shaded apples (several per image, some partly hidden behind leaves, some
images without any) go to ``ROOT/1-Mask-set/{training,validation}_images_and_annotations/`` as
``_MG_xxxx_NN.jpg``, each with a VIA CSV ``mask__MG_xxxx_NN.csv`` holding one polygon per visible
apple, quoted as VIA exports it. The same seed writes the same files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import contourpy
import numpy as np
from PIL import Image, ImageDraw

from datamodules.fuji_layout import VIA_SPLIT_FOLDERS
from datamodules.via import VIA_COLUMNS

log = logging.getLogger(__name__)

_MAX_POLYGON_POINTS = 48


def _ellipse(
    cx: float, cy: float, rx: float, ry: float, angle: float, points: int = 24
) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return list(
        zip(
            cx + x * np.cos(angle) - y * np.sin(angle),
            cy + x * np.sin(angle) + y * np.cos(angle),
            strict=True,
        )
    )


def mask_polygon(mask: np.ndarray) -> list[tuple[int, int]]:
    """Return the outline of a boolean mask's largest region as at most 48 integer points (as VIA)."""
    padded = np.pad(mask.astype(np.float64), 1)
    lines = contourpy.contour_generator(z=padded).lines(0.5)
    outline = max(lines, key=len) - 1 + 0.5  # back from padded indices to continuous pixel coordinates
    step = max(1, int(np.ceil(len(outline) / _MAX_POLYGON_POINTS)))
    return [(int(round(x)), int(round(y))) for x, y in outline[:-1:step]]


@dataclass
class SyntheticOrchard:
    """Shape of the synthetic orchard.

    Args:
        train_images: Images in the training folder.
        val_images: Images in the validation folder.
        width: Image width in pixels.
        height: Image height in pixels.
        apples_per_image: Fewest and most apples in an image that has apples.
        apple_radius: Smallest and largest apple radius, as a fraction of the shorter image side.
        empty_fraction: Fraction of images without apples (negative samples).
        occlusion: Probability that a leaf hides part of an apple.
        seed: Seed; the same seed writes the same files.

    """

    train_images: int = 40
    val_images: int = 10
    width: int = 256
    height: int = 192
    apples_per_image: tuple[int, int] = (1, 6)
    apple_radius: tuple[float, float] = (0.07, 0.13)
    empty_fraction: float = 0.1
    occlusion: float = 0.5
    seed: int = 0

    def write(self, root: Path) -> Path:
        """Write the orchard under ``root`` (created) and return ``root``."""
        root = Path(root)
        for offset, (split, count) in enumerate((("train", self.train_images), ("val", self.val_images))):
            folder = root / "1-Mask-set" / VIA_SPLIT_FOLDERS[split]
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                rng = np.random.default_rng([self.seed, offset, index])
                stem = f"_MG_{3000 + 2000 * offset + index // 12:04d}_{index % 12 + 1:02d}"
                image, polygons = self._render(rng)
                image.save(folder / f"{stem}.jpg", quality=92)
                _write_via_csv(
                    folder / f"mask_{stem}.csv",
                    f"{stem}.jpg",
                    (folder / f"{stem}.jpg").stat().st_size,
                    polygons,
                )
        (root / "SYNTHETIC.txt").write_text(
            "Synthetic orchard written by Harvest (datamodules/synthetic_orchard.py), not Fuji-SfM.\n"
            + json.dumps(asdict(self), indent=2)
            + "\n"
        )
        log.info(
            "Wrote a synthetic orchard (%d + %d images, seed %d) to %s",
            self.train_images,
            self.val_images,
            self.seed,
            root,
        )
        return root

    # ------------------------------------------------------------------ drawing
    def _canopy(self, rng: np.random.Generator) -> Image.Image:
        w, h = self.width, self.height
        coarse = rng.uniform(0.6, 1.2, size=(4, 5, 3)) * np.array([0.25, 0.5, 0.18])
        base = Image.fromarray((coarse * 255).clip(0, 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        draw = ImageDraw.Draw(base)
        for _ in range(rng.integers(2, 5)):  # branches
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            draw.line(
                [(x0, y0), (x0 + rng.uniform(-w, w) / 2, y0 + rng.uniform(-h, h) / 2)],
                fill=(90, 62, 40),
                width=int(rng.integers(2, 6)),
            )
        self._leaves(draw, rng, int(w * h / 180))
        return base

    def _leaves(self, draw: ImageDraw.ImageDraw, rng: np.random.Generator, count: int) -> None:
        size = min(self.width, self.height)
        for _ in range(count):
            cx, cy = rng.uniform(0, self.width), rng.uniform(0, self.height)
            rx, ry = size * rng.uniform(0.03, 0.07), size * rng.uniform(0.012, 0.03)
            green = (int(rng.integers(30, 110)), int(rng.integers(90, 190)), int(rng.integers(20, 70)))
            draw.polygon(_ellipse(cx, cy, rx, ry, rng.uniform(0, np.pi)), fill=green)

    def _render(self, rng: np.random.Generator) -> tuple[Image.Image, list[list[tuple[int, int]]]]:
        image = self._canopy(rng)
        if rng.random() < self.empty_fraction:
            return image, []
        pixels = np.asarray(image, dtype=np.float64).copy()
        yy, xx = np.mgrid[0 : self.height, 0 : self.width] + 0.5
        size = min(self.width, self.height)
        disks: list[np.ndarray] = []
        centres: list[tuple[float, float, float]] = []
        for _ in range(int(rng.integers(self.apples_per_image[0], self.apples_per_image[1] + 1))):
            for _attempt in range(30):
                r = size * rng.uniform(*self.apple_radius)
                cx, cy = rng.uniform(r, self.width - r), rng.uniform(r, self.height - r)
                if all(np.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in centres):
                    break
            else:
                continue
            centres.append((cx, cy, r))
            dist = np.hypot(xx - cx, yy - cy)
            inside = dist <= r
            light = np.clip(1.0 - np.hypot(xx - (cx - 0.35 * r), yy - (cy - 0.35 * r)) / (1.7 * r), 0, 1)
            colour = np.array([rng.uniform(150, 225), rng.uniform(25, 75), rng.uniform(20, 50)])
            colour += rng.uniform(0, 0.35) * (np.array([215, 170, 70]) - colour)  # Fuji's yellow blush
            shaded = colour * (0.35 + 0.75 * light[..., None]) + 70 * (light[..., None] ** 6)
            pixels[inside] = shaded[inside]
            disks.append(inside)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
        front = Image.new("L", image.size, 0)
        for (cx, cy, r), disk in zip(centres, disks, strict=True):
            if rng.random() < self.occlusion:
                leaf = Image.new("L", image.size, 0)
                angle = rng.uniform(0, 2 * np.pi)
                lx, ly = cx + 0.9 * r * np.cos(angle), cy + 0.9 * r * np.sin(angle)
                ImageDraw.Draw(leaf).polygon(_ellipse(lx, ly, 0.6 * r, 0.3 * r, angle + np.pi / 2), fill=255)
                if (disk & ~(np.asarray(leaf) > 0)).sum() > 0.6 * disk.sum():
                    green = (
                        int(rng.integers(40, 100)),
                        int(rng.integers(110, 180)),
                        int(rng.integers(25, 60)),
                    )
                    image.paste(Image.new("RGB", image.size, green), mask=leaf)
                    front.paste(255, mask=leaf)
        hidden = np.asarray(front) > 0
        return image, [mask_polygon(disk & ~hidden) for disk in disks]


def _write_via_csv(path: Path, filename: str, file_size: int, polygons: list[list[tuple[int, int]]]) -> None:
    lines = [",".join(VIA_COLUMNS)]
    for region_id, polygon in enumerate(polygons):
        shape = {
            "name": "polygon",
            "all_points_x": [p[0] for p in polygon],
            "all_points_y": [p[1] for p in polygon],
        }
        quoted = json.dumps(shape, separators=(",", ":")).replace('"', '""')
        lines.append(f'{filename},{file_size},"{{}}",{len(polygons)},{region_id},"{quoted}","{{}}"')
    if not polygons:
        lines.append(f'{filename},{file_size},"{{}}",0,0,"{{}}","{{}}"')
    path.write_text("\n".join(lines) + "\n")
