"""Data-loading cost per image on one core, before and after, for both pipelines, in one run.

Fuji: a training sample of the recipe (decode, polygons to masks, flip, scale jitter and colour jitter at
1024 px). "before" is a copy of the sample code as it was (torchvision ``decode_image`` at full size,
masks rasterised at full size, every transform at full size); "after" is the data module as it is
(JPEG decoded at a reduced scale, resized once to its load size, masks rasterised there and kept as
RLEs between epochs). Groceries: a training sample of the recipe (decode, random resized crop to 224,
flip, normalise), the old decoder beside :func:`harvest.core.image_io.read_rgb`.

Photos are written at benchmark time (nothing is committed): Fuji-SfM-sized 5184x3456 JPEGs of
natural-image-like content (1/f noise, the spectrum of natural photos, with shaded apples) and a dozen
apple polygons each in VIA CSVs, read by the real data module; grocery photos of 1024x768. Also times the
up-front decode check of every image (:func:`harvest.core.image_io.check_images`), one process beside all.

    OMP_NUM_THREADS=1 python benchmarks/data_throughput.py               # 6 photos, 3 epochs
    OMP_NUM_THREADS=1 python benchmarks/data_throughput.py --images 12 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image

from datamodules import FujiApplesDataModule
from datamodules.detection_transforms import train_transforms
from datamodules.fuji_layout import VIA_SPLIT_FOLDERS
from datamodules.image_folder import ImageDataset, build_transform
from datamodules.instance_data import Sample, boxes_from_masks
from datamodules.synthetic_orchard import _write_via_csv
from harvest.core.image_io import check_images

FUJI_SIZE = (5184, 3456)
GROCERY_SIZE = (1024, 768)


# ---------------------------------------------------------------------- photos
def natural_photo(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """RGB ``uint8[H, W, 3]`` with a natural photo's 1/f amplitude spectrum (foliage-like greens)."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(fx, fy)
    radius[0, 0] = 1.0
    spectrum = (rng.standard_normal(radius.shape) + 1j * rng.standard_normal(radius.shape)) / radius**1.1
    spectrum[0, 0] = 0
    luma = np.fft.irfft2(spectrum, s=(height, width)).astype(np.float32)
    luma = (luma - luma.mean()) / luma.std()
    tint = rng.uniform(0.7, 1.3, size=(height // 64 + 1, width // 64 + 1, 3)).astype(np.float32)
    tint = np.asarray(Image.fromarray((tint * 100).astype(np.uint8)).resize((width, height), Image.BILINEAR))
    base = np.array([70, 110, 45], np.float32) * tint / 100.0
    return np.clip(base + 38 * luma[..., None], 0, 255).astype(np.uint8)


def apple_polygons(
    image: Image.Image, rng: np.random.Generator, count: int = 12
) -> list[list[tuple[int, int]]]:
    """Draw ``count`` shaded apples on ``image`` and return their outlines (40-point polygons, as VIA)."""
    draw = ImageDraw.Draw(image)
    width, height = image.size
    polygons = []
    for _ in range(count):
        r = rng.uniform(0.02, 0.045) * width
        cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        wobble = 1 + 0.06 * np.sin(3 * t + rng.uniform(0, 6))
        xs, ys = cx + r * wobble * np.cos(t), cy + 0.92 * r * wobble * np.sin(t)
        points = [(int(x), int(y)) for x, y in zip(xs, ys, strict=True)]
        for shade in range(6):  # a lit side: concentric, lighter polygons
            k = 1 - shade / 7
            draw.polygon(
                [(cx - 0.3 * r * (1 - k) + (x - cx) * k, cy - 0.3 * r * (1 - k) + (y - cy) * k) for x, y in points],
                fill=(150 + 15 * shade, 40 + 8 * shade, 30),
            )
        polygons.append(points)
    return polygons


def write_orchard(root: Path, count: int) -> Path:
    """``count`` Fuji-sized photos with VIA CSVs in the Fuji-SfM layout under ``root``."""
    folder = root / "1-Mask-set" / VIA_SPLIT_FOLDERS["train"]
    folder.mkdir(parents=True)
    for index in range(count):
        rng = np.random.default_rng(index)
        image = Image.fromarray(natural_photo(*FUJI_SIZE, rng))
        polygons = apple_polygons(image, rng)
        name = f"_MG_{3000 + index:04d}_01.jpg"
        image.save(folder / name, quality=90)
        _write_via_csv(folder / f"mask_{Path(name).stem}.csv", name, (folder / name).stat().st_size, polygons)
    return root


def write_groceries(folder: Path, count: int) -> list[Path]:
    """``count`` grocery-photo-sized JPEGs."""
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"photo_{index:03d}.jpg"
        Image.fromarray(natural_photo(*GROCERY_SIZE, np.random.default_rng(100 + index))).save(path, quality=90)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------- the code as it was
def old_fuji_sample(sample: Sample, transforms: Callable) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The Fuji training sample before this change (``InstanceDataset.__getitem__``, as it was)."""
    image = tv_tensors.Image(decode_image(str(sample.image), mode=ImageReadMode.RGB))
    masks = torch.from_numpy(sample.masks())
    target = {
        "boxes": tv_tensors.BoundingBoxes(
            boxes_from_masks(masks), format="XYXY", canvas_size=(sample.height, sample.width)
        ),
        "labels": torch.tensor([inst.label for inst in sample.instances], dtype=torch.int64),
        "masks": tv_tensors.Mask(masks),
    }
    image, target = transforms(image, target)
    return image.as_subclass(torch.Tensor), {k: v.as_subclass(torch.Tensor) for k, v in target.items()}


def old_grocery_read(path: Path, min_size: int) -> Image.Image:
    """The grocery decoder before this change (``image_folder._decode``, as it was)."""
    with Image.open(path) as image:
        if min_size and image.format == "JPEG":
            image.draft("RGB", (min_size, min_size))
        return image.convert("RGB")


# ---------------------------------------------------------------------- timing
def per_item_ms(get: Callable[[int], object], count: int, epochs: int) -> list[float]:
    """CPU milliseconds of each ``get(i)`` over ``epochs`` passes, the first item once untimed (warm-up).

    CPU time of this process, not wall time: on a shared machine other jobs stretch wall time far more.
    """
    get(0)
    times = []
    for _ in range(epochs):
        torch.manual_seed(0)  # each pass draws the same augmentations: passes differ by other jobs only
        for index in range(count):
            started = time.process_time()
            get(index)
            times.append((time.process_time() - started) * 1000)
    return times


def best_per_image(times: list[float], count: int) -> float:
    """Median over images of each image's fastest pass (each pass does the same work, see :func:`per_item_ms`).

    Other jobs on the machine only ever add time, so this is the closest to the cost on idle cores.
    """
    return statistics.median(min(times[i::count]) for i in range(count))


def row(name: str, before: list[float], after: list[float], count: int) -> str:
    b, a = statistics.median(before), statistics.median(after)
    bb, ba = best_per_image(before, count), best_per_image(after, count)
    return f"| {name} | {b:.1f} ms | {a:.1f} ms | {b / a:.2f}x | {bb:.1f} ms | {ba:.1f} ms | {bb / ba:.2f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="Fuji photos (grocery photos: 4x as many)")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the photos")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        root = write_orchard(Path(tmp) / "Fuji-SfM", args.images)
        groceries = write_groceries(Path(tmp) / "groceries", 4 * args.images)
        sizes = [p.stat().st_size / 1e6 for p in root.rglob("*.jpg")]
        print(
            f"wrote {args.images} photos of {FUJI_SIZE[0]}x{FUJI_SIZE[1]} ({statistics.mean(sizes):.1f} MB each, "
            f"12 apple polygons) and {len(groceries)} of {GROCERY_SIZE[0]}x{GROCERY_SIZE[1]} "
            f"in {time.perf_counter() - started:.0f} s"
        )
        dm = FujiApplesDataModule(root=root, num_workers=0, val_fraction=0, test_fraction=0, on_bad_data="error")
        dm.setup("fit")
        dataset = dm.datasets["train"]
        samples, count = dataset.samples, len(dataset.samples)
        old_transforms = train_transforms(dm.min_size, dm.max_size, dm.scale_range, dm.hflip, dm.color_jitter)
        torch.manual_seed(0)
        fuji_before = per_item_ms(lambda i: old_fuji_sample(samples[i], old_transforms), count, args.epochs)
        uncached = type(dataset)(samples, dataset.transforms, dataset.load_size)  # image_cache: false
        fuji_uncached = per_item_ms(uncached.__getitem__, count, args.epochs)
        fuji_first = []
        for epoch in range(args.epochs):  # a new cache each time: every pass is a first epoch
            cache = Path(tmp) / f"cache{epoch}"
            cache.mkdir()
            fresh = type(dataset)(samples, dataset.transforms, dataset.load_size, cache_dir=cache)
            fuji_first += per_item_ms(fresh.__getitem__, count, 1)
        fuji_cached = per_item_ms(fresh.__getitem__, count, args.epochs)

        transform = build_transform(224, True, [], (0.7, 1.0))
        new = ImageDataset([(p, 0) for p in groceries], transform, min_size=224)
        grocery_before = per_item_ms(
            lambda i: transform(old_grocery_read(groceries[i], 224)), len(groceries), args.epochs
        )
        grocery_after = per_item_ms(new.__getitem__, len(groceries), args.epochs)

        cpus = len(os.sched_getaffinity(0))
        checks = {
            "Fuji photos": time_check(sorted(root.rglob("*.jpg")) * 8, cpus),
            "grocery photos": time_check(groceries * 4, cpus),
        }

    print(
        f"\none core (torch threads 1): CPU time per training sample, median over {args.epochs} epochs, and the "
        "median over images of each image's fastest epoch (best)\n"
    )
    print("| pipeline: training sample | before | after | speed-up | best before | best after | speed-up |")
    print("|---|---|---|---|---|---|---|")
    fuji = "Fuji, 5184x3456 JPEG to 1024 px, 12 polygons"
    print(row(f"{fuji}: epochs 2+ (images cached)", fuji_before, fuji_cached, count))
    print(row(f"{fuji}: first epoch (decodes, fills the cache)", fuji_before, fuji_first, count))
    print(row(f"{fuji}: `image_cache: false`", fuji_before, fuji_uncached, count))
    print(row("groceries, 1024x768 JPEG to 224 px", grocery_before, grocery_after, len(groceries)))
    print(f"\nup-front decode check, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(f"| files | CPU per file | wall per file, 1 process | wall per file, {cpus} processes | ratio |")
    print("|---|---|---|---|---|")
    for name, (files, cpu, serial, parallel) in checks.items():
        print(f"| {files} {name} | {cpu:.1f} ms | {serial:.1f} ms | {parallel:.1f} ms | {serial / parallel:.2f}x |")


def time_check(images: list[Path], cpus: int) -> tuple[int, float, float, float]:
    """``(files, CPU ms per file in one process, wall ms per file in one process, wall ms with cpus)``."""
    out = [len(images)]
    for workers in (1, cpus):
        started, cpu = time.perf_counter(), time.process_time()
        check_images(images, workers=workers)
        wall = (time.perf_counter() - started) * 1000 / len(images)
        out += [(time.process_time() - cpu) * 1000 / len(images), wall] if workers == 1 else [wall]
    return tuple(out)  # type: ignore[return-value]


if __name__ == "__main__":
    main()
