"""Prediction overlays a person can read: truth outlined, predictions coloured by class, labels apart, a legend."""

from __future__ import annotations

import torch

from callbacks.prediction_images import class_colour, outlines, overlay, place_labels


def disc(cx: int, cy: int, r: int, size: tuple[int, int] = (120, 160)) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    return ((yy - cy) ** 2 + (xx - cx) ** 2) <= r**2


def test_labels_of_crowded_boxes_do_not_overlap_and_stay_inside() -> None:
    boxes = [(40, 40, 80, 80), (42, 41, 82, 81), (41, 42, 79, 80), (0, 0, 10, 10), (150, 110, 160, 120)]
    sizes = [(50, 13)] * len(boxes)
    spots = place_labels(boxes, sizes, (160, 120))
    for i, a in enumerate(spots):
        assert 0 <= a[0] and a[2] <= 160 and 0 <= a[1] and a[3] <= 120
        for b in spots[i + 1 :]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    assert spots[0][3] <= 40  # the most confident label sits right above its box


def test_overlay_outlines_truth_in_white_fills_predictions_by_class_and_adds_a_header() -> None:
    image = torch.full((3, 120, 160), 0.3)
    truth = torch.stack([disc(50, 60, 20), disc(120, 50, 15)]).to(torch.uint8)
    target = {"boxes": torch.tensor([[30.0, 40, 70, 80], [105, 35, 135, 65]]), "labels": torch.tensor([1, 1])}
    target["masks"] = truth
    detections = {
        "boxes": torch.tensor([[32.0, 42, 72, 82], [100, 30, 140, 70], [0, 0, 20, 20]]),
        "labels": torch.tensor([1, 2, 1]),
        "scores": torch.tensor([0.9, 0.8, 0.1]),  # the last one is below the threshold
        "masks": torch.stack([disc(52, 62, 19), disc(120, 50, 16), disc(5, 5, 4)]).float()[:, None],
    }
    panel = overlay(image, detections, ["background", "apple", "leaf"], target, title="validation image 3, epoch 7")
    header = panel.shape[1] - 120  # title, then one legend row per ~160 pixels of entries
    assert panel.dtype == torch.uint8 and panel.shape[2] == 160 and 40 <= header <= 70
    body = panel[:, header:]
    edge = outlines(truth.bool())
    assert (body[:, edge] == 255).float().mean() > 0.95  # ground truth: white outlines (labels may cover a bit)
    red = torch.tensor([0xFF, 0x3B, 0x30])
    assert class_colour(1) == "#ff3b30" and (body[:, 62, 52].int() - (0.4 * red + 0.6 * 76).int()).abs().max() <= 2
    assert (body[:, 5, 5] == torch.tensor([76, 76, 76], dtype=torch.uint8)).all()  # below the threshold: not drawn
    legend = panel[:, :header]
    leaf = torch.tensor([0xFF, 0xCC, 0x00], dtype=torch.uint8)[:, None, None]
    assert (legend < 128).any() and (legend == leaf).all(0).any()  # the title's text; the leaf's swatch
