"""Bad and unusual image files through the ``harvest`` command, both pipelines.

Damaged files (truncated JPEG/PNG, zero bytes, text with an image suffix) stop a run before training,
one line naming the file, or are skipped at every stage with ``data.on_bad_data: skip``. Unusual but
valid files (16-bit, palette, CMYK, grayscale, EXIF-rotated) decode to the RGB a person sees, and
``harvest data check`` says what it converted.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_of, fuji_args, groceries_args
from PIL import Image

from datamodules.image_folder import ImageDataset, build_transform
from datamodules.instance_data import InstanceDataset, Sample
from harvest.commands.main import main
from harvest.core.image_io import BadImageError, read_rgb

TRAIN = "1-Mask-set/training_images_and_annotations"
QUIET = ["--trainer.logger", "false"]


def run(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run ``harvest ARGV`` as the console script does: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["harvest", *argv])
    try:
        main()
        status = 0
    except SystemExit as exit_:
        status = int(exit_.code or 0)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def error_line(stderr: str) -> str:
    """The one ``harvest: error:`` line; there is no traceback."""
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("harvest: error:")]
    return line


def truncated(path: Path) -> Path:
    """Cut ``path`` to 60 % of its bytes (its header still reads)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def noise_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0) -> Path:
    """A noisy RGB image (so a cut file misses pixel data), saved in the format of ``path``'s suffix."""
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def damage_groceries(root: Path) -> list[Path]:
    """Add a truncated JPEG, a truncated PNG, a zero-byte file and a text file named .jpg; return them."""
    train = root / "train"
    classes = sorted(p for p in train.iterdir() if p.is_dir())
    bad = [
        truncated(noise_image(classes[0] / "cut.jpg", (64, 64))),
        truncated(noise_image(classes[1] / "cut.png", (64, 64))),
        root / "val" / classes[2].name / "empty.jpg",
        root / "test" / classes[0].name / "notes.jpg",
    ]
    bad[2].write_bytes(b"")
    bad[3].write_text("this is not an image\n")
    return bad


# ---------------------------------------------------------------------- damaged files
def test_groceries_error_names_the_file_before_training(
    in_tmp: Path, tiny_groceries: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of(tiny_groceries, in_tmp / "g")
    bad = damage_groceries(root)
    status, _, err = run(["fit", *groceries_args(root, *QUIET, "--run_name", "bad")], monkeypatch, capsys)
    line = error_line(err)
    assert status == 1 and str(bad[0]) in line and "cannot read image" in line and "on_bad_data: skip" in line
    assert "4 unreadable images found" in line
    run_dir = in_tmp / "runs" / "bad"
    assert not list(run_dir.rglob("*.ckpt")) and not list(run_dir.rglob("*.tmp"))  # nothing trained or half-written
    assert not (run_dir / "dataset_card.json").exists()

    status, _, err = run(["data", "check", *groceries_args(root)], monkeypatch, capsys)
    assert status == 1


def test_groceries_skip_leaves_bad_files_out_at_every_stage(
    in_tmp: Path,
    tiny_groceries: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = copy_of(tiny_groceries, in_tmp / "g")
    bad = damage_groceries(root)
    args = groceries_args(root, *QUIET, "--data.on_bad_data", "skip", "--trainer.max_epochs", "1", "--run_name", "skip")
    status, _, err = run(["fit", *args], monkeypatch, capsys)
    assert status == 0, err
    for path in bad:  # each named once, though the card, the grid, training, SSL and test all ran
        assert err.count(f"Skipping {path} ") == 1, err
    run_dir = in_tmp / "runs" / "skip"
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["skipped_files"] == 4
    card = json.loads((run_dir / "dataset_card.json").read_text())
    assert card["skipped_files"]["count"] == 4
    assert sorted(line.split(": ")[0] for line in card["skipped_files"]["files"]) == sorted(map(str, bad))
    assert (run_dir / "plots" / "dataset_samples.png").is_file()

    incoming = in_tmp / "incoming"
    incoming.mkdir()
    noise_image(incoming / "good.jpg", (48, 48))
    (incoming / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    predict = ["predict", *groceries_args(root, *QUIET, "--data.predict_root", str(incoming))]
    predict += ["--ckpt_path", summary["last_checkpoint"]]
    status, _, err = run(predict, monkeypatch, capsys)
    assert status == 1 and str(incoming / "broken.png") in error_line(err)
    status, _, err = run([*predict, "--data.on_bad_data", "skip"], monkeypatch, capsys)
    assert status == 0 and err.count(f"Skipping {incoming / 'broken.png'} ") == 1, err


def damage_orchard(root: Path) -> Path:
    """Replace one training image of the orchard by a truncated noisy JPEG of the same size; return it."""
    image = sorted((root / TRAIN).glob("*.jpg"))[0]
    with Image.open(image) as original:
        size = original.size
    return truncated(noise_image(image, size))


def test_fuji_error_names_the_truncated_jpeg_before_training(
    in_tmp: Path, tiny_orchard: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of(tiny_orchard, in_tmp / "orchard")
    bad = damage_orchard(root)
    status, _, err = run(["fit", *fuji_args(root, *QUIET, "--run_name", "bad")], monkeypatch, capsys)
    line = error_line(err)
    assert status == 1 and line.startswith(f"harvest: error: {bad}: cannot be decoded (image file is truncated")
    assert "on_bad_data=skip" in line
    assert not list((in_tmp / "runs" / "bad").rglob("*.ckpt"))

    status, out, err = run(["data", "check", *fuji_args(root)], monkeypatch, capsys)
    assert status == 1 and f"{bad}: cannot be decoded" in err + out


def test_fuji_skip_trains_evaluates_and_predicts_without_the_bad_file(
    in_tmp: Path, tiny_orchard: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of(tiny_orchard, in_tmp / "orchard")
    bad = damage_orchard(root)
    (root / TRAIN / "_MG_9999_01.jpg").write_bytes(b"")  # zero bytes, annotated as a negative
    header = (root / TRAIN / f"mask_{bad.stem}.csv").read_text().splitlines()[0]
    (root / TRAIN / "mask__MG_9999_01.csv").write_text(f'{header}\n_MG_9999_01.jpg,0,"{{}}",0,0,"{{}}","{{}}"\n')
    skip = ["--data.on_bad_data", "skip", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    status, _, err = run(["fit", *fuji_args(root, *QUIET, *skip, "--run_name", "skip")], monkeypatch, capsys)
    assert status == 0, err
    assert err.count(f"{bad}: cannot be decoded") == 1, err  # named once (the count warning names the first)
    summary = json.loads((in_tmp / "runs" / "skip" / "training_summary.json").read_text())
    assert summary["status"] == "completed" and summary["skipped_files"] == 2
    assert err.count(f"{root / TRAIN / '_MG_9999_01.jpg'}: cannot be read as an image") == 1, err
    card = json.loads((in_tmp / "runs" / "skip" / "dataset_card.json").read_text())
    assert any(line.startswith(f"{bad}: ") for line in card["skipped_files"]["files"])

    status, _, err = run(
        ["predict", *fuji_args(root, *QUIET, "--data.predict_root", str(root / TRAIN), *skip)], monkeypatch, capsys
    )
    assert status == 0 and f"Skipping (data.on_bad_data: skip): {bad}: cannot be decoded" in err, err


# ---------------------------------------------------------------------- conversions
def unusual_images(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """Valid but unusual files, each with the RGB pixels a person sees in it."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    gray16 = (np.arange(24 * 32, dtype=np.uint32).reshape(24, 32) * 85).astype(np.uint16)  # 0..65195
    out = {}
    Image.fromarray(gray16).save(folder / "sixteen.png")
    eight = np.rint(gray16 / 257).astype(np.uint8)
    out["16-bit"] = (folder / "sixteen.png", np.repeat(eight[..., None], 3, axis=2))
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(folder / "palette.png")
    out["palette"] = (folder / "palette.png", np.asarray(palette.convert("RGB")))
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", quality=100)
    out["CMYK"] = (folder / "cmyk.jpg", rgb)
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    out["grayscale"] = (folder / "gray.png", np.repeat(rgb[..., :1], 3, axis=2))
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(rgb, 1)))  # stored sideways; EXIF says turn it back
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored.save(folder / "rotated.png", exif=exif)
    out["EXIF"] = (folder / "rotated.png", rgb)
    return out


def test_unusual_images_decode_as_people_see_them(tmp_path: Path) -> None:
    for kind, (path, expected) in unusual_images(tmp_path).items():
        decoded = read_rgb(path)
        pixels = np.asarray(decoded.image)
        assert decoded.image.mode == "RGB" and pixels.shape == expected.shape, kind
        tolerance = 3 if kind == "CMYK" else 0  # a JPEG at quality 100 is near, not exact
        assert np.abs(pixels.astype(int) - expected).max() <= tolerance, kind
        assert decoded.conversions, kind
    assert np.asarray(read_rgb(tmp_path / "sixteen.png").image).min() < 10  # not a solid white image


def test_both_pipelines_feed_the_converted_pixels(tmp_path: Path) -> None:
    images = unusual_images(tmp_path)
    to_tensor = build_transform(24, train=False, augmentations=[], crop_scale=(1, 1)).transforms[:1]
    for kind, (path, expected) in images.items():
        grocery, _, _ = ImageDataset([(path, 0)], to_tensor[0])[0]
        fuji, _ = InstanceDataset([Sample(path, path, 32, 24)])[0]  # no transforms: uint8
        tolerance = 3 if kind == "CMYK" else 0
        for tensor in (grocery, fuji):
            assert np.abs(tensor.permute(1, 2, 0).numpy().astype(int) - expected).max() <= tolerance, kind


def test_data_check_warns_on_what_it_converted(
    tiny_groceries: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = copy_of(tiny_groceries, tmp_path / "g")
    folder = root / "train" / sorted(p.name for p in (root / "train").iterdir())[0]
    images = unusual_images(folder)
    status, out, _ = run(["data", "check", *groceries_args(root)], monkeypatch, capsys)
    assert status == 0
    warnings = [line for line in out.splitlines() if line.startswith("warning")]
    for kind, (path, _) in images.items():
        assert any(str(path) in line and "converted on reading" in line for line in warnings), (kind, out)
    assert any("16-bit grayscale scaled to 8 bits" in line for line in warnings)
    assert any("EXIF orientation applied" in line for line in warnings)


class Records(logging.Handler):
    """Keeps the messages logged to it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_file_that_breaks_during_the_run_is_skipped_once_or_named(tmp_path: Path) -> None:
    paths = [noise_image(tmp_path / f"{i}.jpg", (40, 30), seed=i) for i in range(3)]
    to_tensor = build_transform(24, train=False, augmentations=[], crop_scale=(1, 1)).transforms[0]
    grocery = ImageDataset([(p, i) for i, p in enumerate(paths)], to_tensor, on_bad_data="skip")
    fuji = InstanceDataset([Sample(p, p, 40, 30) for p in paths], on_bad_data="skip")
    truncated(paths[1])  # after the check at the start
    records, logger = Records(), logging.getLogger("datamodules")
    logger.addHandler(records)
    try:
        assert [grocery[1][1] for _ in range(3)] == [2, 2, 2]  # the next image stands in
        assert all(torch.equal(fuji[1][0], fuji[2][0]) for _ in range(3))
    finally:
        logger.removeHandler(records)
    assert sum(m.startswith(f"Skipping {paths[1]} ") for m in records.messages) == 2  # once per dataset
    with pytest.raises(BadImageError, match=f"^{paths[1]}: cannot read image"):
        ImageDataset([(paths[1], 0)], to_tensor)[0]
    with pytest.raises(BadImageError, match=f"^{paths[1]}: cannot read image"):
        InstanceDataset([Sample(paths[1], paths[1], 40, 30)])[0]
