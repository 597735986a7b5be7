"""Fast Fuji samples: images loaded at their training size, masks rasterised there, caches, colour jitter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from datamodules.detection_transforms import AffineColorJitter, fitted_size, load_size, train_transforms
from datamodules.instance_data import Instance, InstanceDataset, Sample, boxes_from_masks
from harvest.core.image_io import check_images


def photo(path: Path, width: int = 400, height: int = 300, seed: int = 0) -> Path:
    """A smooth random RGB JPEG (natural-image-like: low frequencies dominate)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 20, width // 20, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(path, quality=95)
    return path


def ellipse(cx: float, cy: float, rx: float, ry: float, points: int = 40) -> list[float]:
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return [float(v) for xy in zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True) for v in xy]


def apple_sample(tmp_path: Path) -> Sample:
    image = photo(tmp_path / "a.jpg")
    polygons = [ellipse(100, 80, 40, 30), ellipse(300, 200, 25, 45), ellipse(60, 250, 15, 15)]
    instances = [Instance(1, [p]) for p in polygons]
    rle = mask_utils.encode(np.asfortranarray(Sample(image, image, 400, 300, [instances[0]]).masks()[0]))
    rle["counts"] = rle["counts"].decode()
    instances.append(Instance(1, rle))  # the first apple again, as a COCO RLE
    return Sample(image, image, 400, 300, instances)


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.bool() & b.bool()).sum() / (a.bool() | b.bool()).sum())


def test_load_sizes_are_the_sizes_the_transforms_resize_to() -> None:
    for width, height in ((5184, 3456), (3456, 5184), (640, 480), (100, 1000)):
        image = tv_tensors.Image(torch.zeros(3, height, width, dtype=torch.uint8))
        resized = v2.RandomShortestSize(min_size=[1024], max_size=1536)(image)
        assert fitted_size(width, height, 1024, 1536) == (resized.shape[-1], resized.shape[-2]) or (
            min(width, height) <= 1024 and fitted_size(width, height, 1024, 1536) == (width, height)
        )
    assert load_size(1024, 1536, (0.8, 1.2))(5184, 3456) == (1536, 1024)  # the longer side caps it
    assert load_size(800, 4000, (0.8, 1.2))(5184, 3456) == fitted_size(5184, 3456, 960, 4000)


def test_masks_and_boxes_at_the_load_size_match_full_size_masks_resized(tmp_path: Path) -> None:
    sample = apple_sample(tmp_path)
    dataset = InstanceDataset([sample], load_size=lambda w, h: (200, 150))
    image, target = dataset[0]
    assert image.shape == (3, 150, 200) and image.dtype == torch.uint8
    full = torch.from_numpy(sample.masks())
    resized = v2.functional.resize(tv_tensors.Mask(full), [150, 200])
    assert target["masks"].shape == (4, 150, 200) and target["masks"].is_contiguous()
    for mine, reference in zip(target["masks"], resized, strict=True):
        assert iou(mine, reference) > 0.93
    assert torch.equal(target["boxes"], boxes_from_masks(target["masks"]))  # COCO's x2 = last column + 1
    assert iou(target["masks"][0], target["masks"][3]) > 0.95  # polygon and RLE of one apple agree
    expected = np.asarray(Image.open(sample.image).convert("RGB").resize((200, 150), Image.BILINEAR))
    difference = np.abs(image.permute(1, 2, 0).numpy().astype(int) - expected)
    assert difference.mean() < 1 and difference.max() <= 12  # decoded at half scale (DCT), then resized


def test_the_image_cache_returns_the_same_pixels_and_survives_a_damaged_file(tmp_path: Path) -> None:
    sample = apple_sample(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    dataset = InstanceDataset([sample], load_size=lambda w, h: (200, 150), cache_dir=cache)
    first, target = dataset[0]
    (cached,) = cache.glob("*.npy")
    assert torch.equal(dataset[0][0], first) and torch.equal(dataset[0][1]["masks"], target["masks"])
    cached.write_bytes(cached.read_bytes()[:100])  # a writer killed halfway
    assert torch.equal(dataset[0][0], first)
    other = InstanceDataset([sample], load_size=lambda w, h: (100, 75), cache_dir=cache)
    assert other[0][0].shape == (3, 75, 100) and len(list(cache.glob("*.npy"))) == 2  # keyed by load size


def test_training_transforms_move_masks_and_boxes_with_the_image(tmp_path: Path) -> None:
    sample = apple_sample(tmp_path)
    size = load_size(120, 200, (0.5, 1.0))
    dataset = InstanceDataset([sample], train_transforms(120, 200, (0.5, 1.0), hflip=0.5), load_size=size)
    torch.manual_seed(0)
    for _ in range(6):
        image, target = dataset[0]
        assert image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
        assert target["masks"].shape[1:] == image.shape[1:] and target["masks"].dtype == torch.uint8
        assert torch.allclose(target["boxes"], boxes_from_masks(target["masks"]), atol=1.5)
        assert target["labels"].dtype == torch.int64 and len(target["labels"]) == len(target["boxes"])


def test_affine_colour_jitter_is_torchvisions_colour_jitter(tmp_path: Path) -> None:
    pixels = np.asarray(Image.open(photo(tmp_path / "p.jpg"))) // 2 + 64  # mid-range: no step clips
    image = tv_tensors.Image(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    as_float = F.to_dtype(image, torch.float32, scale=True)
    jitter = AffineColorJitter(0.4, 0.05)
    contrast_then_saturation = F.adjust_saturation(F.adjust_contrast(as_float, 1.2), 0.7)
    cases = [
        ([0], (1.3, 1, 1), F.adjust_brightness(as_float, 1.3)),
        ([1], (1, 0.7, 1), F.adjust_contrast(as_float, 0.7)),
        ([2], (1, 1, 1.35), F.adjust_saturation(as_float, 1.35)),
        ([1, 2, 0], (0.8, 1.2, 0.7), F.adjust_brightness(contrast_then_saturation, 0.8)),
    ]
    for order, factors, expected in cases:
        out = jitter.transform(image, {"order": order, "factors": list(factors), "hue": 0.0})
        assert out.dtype == torch.float32 and (out - expected).abs().max() < 1e-5, order
    hue = jitter.transform(image, {"order": [3], "factors": [1, 1, 1], "hue": 0.02})
    torchvision_hue = F.adjust_hue(as_float, 0.02)
    assert (hue - torchvision_hue).abs().mean() < (as_float - torchvision_hue).abs().mean()  # the same way
    gray = tv_tensors.Image(torch.full((3, 4, 4), 0.4))
    assert torch.allclose(jitter.transform(gray, {"order": [3], "factors": [1, 1, 1], "hue": 0.3}), gray)
    mask = tv_tensors.Mask(torch.ones(1, 4, 4, dtype=torch.uint8))
    assert jitter(image, mask)[1] is mask  # masks pass through


@pytest.mark.parametrize("workers", [1, 2])
def test_the_decode_check_finds_the_same_files_in_one_or_more_processes(tmp_path: Path, workers: int) -> None:
    good = [photo(tmp_path / f"{i}.jpg", 64, 48, seed=i) for i in range(6)]
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good[0].read_bytes()[:300])
    report = check_images([*good, bad], workers=workers)
    assert list(report) == [*good, bad]
    assert [why is None for why, _ in report.values()] == [True] * 6 + [False]
