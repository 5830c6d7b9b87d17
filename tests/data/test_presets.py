"""One preset of crop, resize, mean and std: built from a checkpoint, an export's metadata or a crop size, and
read alike by train, eval and test-time augmentation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from catdog_cli.data.decode import ImageBatch
from catdog_cli.data.presets import IMAGENET, IMAGENET_MEAN, IMAGENET_STD, Preset

LITE = Preset(224, 256, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_imagenet_is_torchvisions_classic_evaluation():
    assert Preset(224, 256, IMAGENET_MEAN, IMAGENET_STD) == IMAGENET
    with pytest.raises(dataclasses.FrozenInstanceError):
        IMAGENET.resize = 300  # type: ignore[misc]


def test_a_checkpoints_fields_round_trip_as_an_old_checkpoint_stores_them():
    stored = {"image_size": 64, "resize": 73, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    preset = Preset.from_checkpoint({**stored, "backbone": "resnet18"})
    assert preset == Preset(64, 73, IMAGENET_MEAN, IMAGENET_STD)
    assert preset.checkpoint_fields() == stored


def test_an_exports_metadata_gives_its_preset_and_odd_values_raise():
    meta = {"resize": "146", "crop": 128, "steps": [], "mean": [0, 0.5, 1], "std": [1, 1, 1]}
    assert Preset.from_metadata(meta) == Preset(128, 146, (0.0, 0.5, 1.0), (1.0, 1.0, 1.0))
    for broken in ({**meta, "crop": "large"}, {**meta, "mean": 0.5}, {k: v for k, v in meta.items() if k != "std"}):
        with pytest.raises((KeyError, TypeError, ValueError)):
            Preset.from_metadata(broken)


def test_another_crop_keeps_the_weights_resize_ratio():
    assert IMAGENET.for_crop(64) == Preset(64, 73, IMAGENET_MEAN, IMAGENET_STD)
    timm_like = Preset(240, 274, (0.5,) * 3, (0.5,) * 3)  # crop_pct 0.875 at 240
    assert timm_like.for_crop(120).resize == 137 and timm_like.for_crop(240) == timm_like


def test_the_square_is_the_eval_resize_whole_and_the_crop_share_what_the_crop_keeps():
    assert LITE.square() == Preset(256, 256, LITE.mean, LITE.std)
    assert Preset(300, 256, LITE.mean, LITE.std).square().image_size == 300  # a crop above its resize: no smaller
    assert LITE.crop_share == pytest.approx(224 / 256)


def test_train_decodes_at_imagenets_ratio_whatever_the_weights_and_eval_at_their_own():
    wide = Preset(224, 320, LITE.mean, LITE.std)
    assert (wide.eval_spec().resize, wide.eval_spec().crop, wide.eval_spec().train) == (320, 224, False)
    train = wide.train_spec(augment=True)
    assert (train.resize, train.crop, train.train) == (256, 224, True)
    assert wide.train_spec(augment=False) == wide.eval_spec()


def test_eval_crops_become_normalized_model_input():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    batch = ImageBatch(images, torch.zeros(2, dtype=torch.int64), torch.arange(2))
    assert torch.allclose(LITE.model_input(batch), torch.ones(2, 3, 4, 4))  # (1 - 0.5) / 0.5
