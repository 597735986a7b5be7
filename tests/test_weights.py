"""Pretrained weights that cannot be fetched fail in one line that says what to do offline."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api

from lightning_modules.backbones import build_backbone
from lightning_modules.detection_models import build_mask_rcnn


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache and a network that refuses every download (as on an offline machine)."""

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)  # what WeightsEnum calls
    return tmp_path / "hub" / "checkpoints"


def test_a_classifier_backbone_names_the_file_the_folder_and_the_setting(offline_hub: Path) -> None:
    with pytest.raises(RuntimeError) as error:
        build_backbone("resnet18", "DEFAULT")
    message = str(error.value)
    assert "\n" not in message and "network unreachable" in message
    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert f"put resnet18-f37072fd.pth (from {url}) into {offline_hub}/" in message
    assert message.endswith("set model.init_args.weights: null to start from random weights.")


@pytest.mark.parametrize(
    ("options", "file", "setting"),
    [
        (
            {"arch": "maskrcnn_resnet50_fpn_v2", "weights": "DEFAULT"},
            "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth",
            "weights",
        ),
        ({"arch": "resnet18", "weights_backbone": "DEFAULT"}, "resnet18-f37072fd.pth", "weights_backbone"),
    ],
)
def test_a_detector_names_the_weights_it_could_not_fetch(
    offline_hub: Path, options: dict, file: str, setting: str
) -> None:
    with pytest.raises(RuntimeError, match=rf"put {file} .* or set model.init_args.{setting}: null") as error:
        build_mask_rcnn(num_classes=2, **options)
    assert "\n" not in str(error.value)
