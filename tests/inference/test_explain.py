"""Grad-CAM through TransferModel.features: the map each kind of backbone yields, and the pictures drawn of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from catdog_cli.inference.explain import Explainer, as_nchw, find_target, layout_of
from catdog_cli.models.backbones import build_model
from catdog_cli.models.transfer import TransferModel
from catdog_cli.reporting import overlays


def patch_images(size: int, corners: tuple[str, ...] = ("top-left", "bottom-right")) -> torch.Tensor:
    """Dark images with one bright square in a corner each, normalized around zero like model input."""
    x = torch.full((len(corners), 3, size, size), -1.0)
    q = size // 4
    for i, corner in enumerate(corners):
        top = 0 if corner.startswith("top") else size - q
        left = 0 if corner.endswith("left") else size - q
        x[i, :, top : top + q, left : left + q] = 2.0
    return x


@pytest.fixture(scope="module")
def small_vit() -> TransferModel:
    """timm's ViT-Tiny at 32 px (a class token and 2 x 2 patches): the token path, at a test's cost."""
    timm = pytest.importorskip("timm")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        features = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
        return TransferModel(features, nn.Linear(features.num_features, 2)).eval()


@pytest.mark.parametrize(
    "backbone, size, side",
    [("resnet18", 64, 2), ("vgg11_bn", 64, 2), ("densenet121", 64, 2), ("timm:tf_efficientnet_lite0", 96, 3)],
)
def test_every_kind_of_backbone_gets_a_map_that_follows_its_input(backbone, size, side):
    model = build_model(backbone, 2, "none", seed=0).eval()
    maps = Explainer(model)(patch_images(size), torch.tensor([0, 0]))
    assert maps.shape == (2, side, side)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.amax() == 1  # scaled to its peak
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)  # the bright square moved: so did the map


def test_a_vit_is_read_where_patches_still_reach_the_class_token(small_vit):
    x = patch_images(32)
    assert find_target(small_vit, x[:1], 0).module == "blocks.11.norm1"  # not the final norm, which no longer
    maps = Explainer(small_vit)(x, torch.tensor([0, 0]))  # passes the patches' gradient to the class token
    assert maps.shape == (2, 2, 2) and torch.isfinite(maps).all()
    assert not torch.allclose(maps[0], maps[1], atol=1e-3)


def looking_at_brightness() -> TransferModel:
    """A model built to look at bright pixels: positive filters, and class 0's score is their mean response."""
    conv = nn.Conv2d(3, 4, 3, padding=1)
    nn.init.constant_(conv.weight, 0.1)
    nn.init.zeros_(conv.bias)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    nn.init.constant_(head[2].weight, 0.0)
    head[2].weight.data[0] = 1.0
    return TransferModel(nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(4)), head).eval()


@pytest.mark.parametrize("corner", ["top-left", "top-right", "bottom-left", "bottom-right"])
def test_the_peak_follows_what_the_model_looks_at(corner):
    maps = Explainer(looking_at_brightness())(patch_images(32, (corner,)), torch.tensor([0]))
    row, col = divmod(int(maps[0].argmax()), maps.shape[-1])
    assert (row < 4, col < 4) == (corner.startswith("top"), corner.endswith("left"))
    assert maps[0, 7 - row if row < 4 else 0, 7 - col if col < 4 else 0] == 0  # the far corner: nothing there


def test_a_frozen_backbone_is_explained_and_left_as_it_was():
    model = build_model("resnet18", 2, "none", seed=0)
    model.freeze_features()
    model.train()
    maps = Explainer(model)(patch_images(64), torch.tensor([1, 1]))
    assert maps.shape == (2, 2, 2)
    assert model.frozen and model.training and not model.features.training
    assert all(p.grad is None for p in model.parameters())  # only the map's gradient was taken


def test_layouts():
    assert layout_of(torch.zeros(2, 512, 7, 7), 2) == "nchw"
    assert layout_of(torch.zeros(2, 7, 7, 768), 2) == "nhwc"  # Swin, ConvNeXt blocks
    assert layout_of(torch.zeros(2, 197, 768), 2) == "tokens"  # a class token + 14 x 14 patches
    assert layout_of(torch.zeros(2, 512, 1, 1), 2) is None  # pooled
    assert layout_of(torch.zeros(128, 49, 96), 2) is None  # Swin's windows: another batch
    assert layout_of(torch.zeros(2, 1000), 2) is None
    tokens = torch.arange(2 * 197 * 3, dtype=torch.float32).reshape(2, 197, 3)
    grid = as_nchw(tokens, "tokens")
    assert grid.shape == (2, 3, 14, 14) and grid[0, :, 0, 0].tolist() == tokens[0, 1].tolist()


def test_model_view_is_the_centered_square_the_model_saw():
    image = Image.new("RGB", (400, 200))
    view = overlays.model_view(image, 224 / 256)
    assert view.size == (175, 175)


def test_overlay_colors_where_the_model_looked():
    gray = Image.new("RGB", (64, 64), (128, 128, 128))
    picture = np.asarray(overlays.overlay(gray, [[1.0, 0.0], [0.0, 0.0]], size=96)).astype(int)
    assert picture.shape == (96, 96, 3)
    hot, cold = picture[5, 5], picture[90, 90]
    assert hot[0] > hot[2] + 60 and cold[2] > cold[0] + 20  # red where it looked, blue where it did not
    assert overlays.caption(Image.fromarray(picture.astype(np.uint8)), "dog 97.0%").size[1] > 96
