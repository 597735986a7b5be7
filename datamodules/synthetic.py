"""Small synthetic grocery data sets in exactly the DS2GROCERIES on-disk layout.

``ROOT/{train,val,test}/<class>/<class>_<split>_<n>.jpg``: every class is a product drawn in its
own colour, shape and surface texture (stripes, dots, checks…) at a random place and size on a
noisy shelf-like background, so a small CNN tells the classes apart after a few epochs while the
images are still not trivially identical. The same seed writes the same files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class _Product:
    name: str
    rgb: tuple[int, int, int]
    shape: str  # ellipse | box | triangle | bottle | round_box | diamond
    texture: str  # plain | stripes | dots | checks | rings | cross


#: Grocery-like classes; the first ``num_classes`` are used.
PRODUCTS: tuple[_Product, ...] = (
    _Product("apple", (200, 30, 35), "ellipse", "plain"),
    _Product("banana", (235, 205, 40), "bottle", "stripes"),
    _Product("bread", (150, 95, 45), "round_box", "dots"),
    _Product("milk", (235, 235, 240), "box", "checks"),
    _Product("lettuce", (60, 170, 60), "diamond", "rings"),
    _Product("blueberries", (50, 60, 170), "ellipse", "dots"),
    _Product("carrot", (240, 120, 20), "triangle", "stripes"),
    _Product("grape_juice", (120, 40, 130), "bottle", "cross"),
    _Product("cheese", (245, 215, 120), "triangle", "dots"),
    _Product("cucumber", (20, 100, 50), "round_box", "stripes"),
)


def _shape_polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]] | None:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "bottle":
        w = (x1 - x0) / 4
        neck = y0 + (y1 - y0) / 3
        return [
            (cx - w / 2, y0),
            (cx + w / 2, y0),
            (cx + w / 2, neck),
            (x1, neck + w),
            (x1, y1),
            (x0, y1),
            (x0, neck + w),
            (cx - w / 2, neck),
        ]
    return None


def _draw_product(image: Image.Image, product: _Product, rng: np.random.Generator) -> None:
    size = image.width
    extent = rng.uniform(0.45, 0.8) * size
    aspect = rng.uniform(0.8, 1.25)
    w, h = extent * min(1.0, aspect), extent * min(1.0, 1 / aspect)
    x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
    box = (x0, y0, x0 + w, y0 + h)
    colour = tuple(int(np.clip(c + rng.normal(0, 12), 0, 255)) for c in product.rgb)

    mask = Image.new("L", image.size, 0)
    draw = ImageDraw.Draw(mask)
    polygon = _shape_polygon(product.shape, box)
    if polygon is not None:
        draw.polygon(polygon, fill=255)
    elif product.shape == "ellipse":
        draw.ellipse(box, fill=255)
    elif product.shape == "round_box":
        draw.rounded_rectangle(box, radius=min(w, h) / 3, fill=255)
    else:
        draw.rectangle(box, fill=255)

    layer = Image.new("RGB", image.size, colour)
    texture = ImageDraw.Draw(layer)
    dark = tuple(int(c * 0.45) for c in colour)
    step = max(3, int(size / rng.uniform(7, 10)))
    offset = int(rng.integers(0, step))
    for k in range(-size, 2 * size, step):
        p = k + offset
        if product.texture == "stripes":
            texture.line([(p, 0), (p + size, size)], fill=dark, width=max(1, step // 3))
        elif product.texture == "checks":
            texture.line([(p, 0), (p, size)], fill=dark, width=1)
            texture.line([(0, p), (size, p)], fill=dark, width=1)
        elif product.texture == "dots":
            for q in range(offset, size, step):
                texture.ellipse([p, q, p + step / 3, q + step / 3], fill=dark)
        elif product.texture == "rings":
            r = abs(k) + offset
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            texture.ellipse([cx - r, cy - r, cx + r, cy + r], outline=dark, width=1)
        elif product.texture == "cross":
            texture.line([(p, 0), (p - size, size)], fill=dark, width=1)
            texture.line([(p, 0), (p + size, size)], fill=dark, width=1)
    image.paste(layer, (0, 0), mask)


def render(product: _Product, size: int, rng: np.random.Generator) -> Image.Image:
    """One synthetic photo of ``product``: a ``size``x``size`` RGB image."""
    background = rng.integers(70, 150, size=3)
    pixels = background + rng.normal(0, 18, size=(size, size, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    _draw_product(image, product, rng)
    noise = rng.normal(0, 8, size=(size, size, 3))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 0.8))))


def write_groceries(
    root: str | Path,
    num_classes: int = 6,
    train_per_class: int = 40,
    val_per_class: int = 10,
    test_per_class: int = 20,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a synthetic grocery set in the DS2GROCERIES layout and return its root.

    Args:
        root: Folder to write; created if missing, existing files of the same names are overwritten.
        num_classes: Number of classes (at most ``len(PRODUCTS)``).
        train_per_class: Training images per class (the labeled/unlabeled split is made from these).
        val_per_class: Validation images per class; 0 writes no ``val/`` folder (the data module then
            splits validation images off ``train/``).
        test_per_class: Test images per class.
        image_size: Width and height of the JPEG files in pixels.
        seed: Seed; the same seed writes the same images.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    """
    if not 1 <= num_classes <= len(PRODUCTS):
        raise ValueError(f"num_classes={num_classes}: the synthetic grocery set has 1 to {len(PRODUCTS)} classes.")
    root = Path(root)
    counts = dict(zip(SPLITS, (train_per_class, val_per_class, test_per_class), strict=True))
    for split_index, split in enumerate(SPLITS):
        for class_index, product in enumerate(PRODUCTS[:num_classes]):
            if counts[split] <= 0:
                continue
            folder = root / split / product.name
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(counts[split]):
                rng = np.random.default_rng([seed, split_index, class_index, n])
                render(product, image_size, rng).save(folder / f"{product.name}_{split}_{n:04d}.jpg", quality=90)
    return root


@dataclass
class SyntheticGroceries:
    """Shape of the synthetic grocery set a demo config asks for (``data.synthetic``).

    Args:
        num_classes: Number of product classes (at most ``len(PRODUCTS)``).
        train_per_class: Training images per class.
        val_per_class: Validation images per class (0: no ``val/`` folder).
        test_per_class: Test images per class.
        image_size: Width and height of the JPEG files in pixels.
        seed: Seed; the same seed writes the same images.
    """

    num_classes: int = 6
    train_per_class: int = 40
    val_per_class: int = 10
    test_per_class: int = 20
    image_size: int = 64
    seed: int = 0

    def write(self, root: Path) -> Path:
        """Write the set under ``root`` (created) and return ``root``."""
        return write_groceries(
            root, self.num_classes, self.train_per_class, self.val_per_class, self.test_per_class,
            self.image_size, self.seed,
        )  # fmt: skip
