"""compare --weights: one value for all, a per-backbone mapping, or a folder; backbone presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from catdog_cli.core.config import CompareConfig, TrainConfig
from catdog_cli.core.defaults import BACKBONE_PRESETS, SEED_BACKBONES, expand_backbones
from catdog_cli.core.weightfiles import weights_by_backbone
from catdog_cli.errors import CatdogError

GRID = ["resnet18", "timm:tf_efficientnet_lite0"]


def _files(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("value", ["default", "none"])
def test_default_and_none_apply_to_every_backbone(value):
    assert weights_by_backbone(value, GRID) == dict.fromkeys(GRID, value)


def test_mapping_gives_each_backbone_its_file(tmp_path):
    r18, lite = _files(tmp_path, "r18.pth", "lite0.pth") / "r18.pth", tmp_path / "lite0.pth"
    mapping = f"resnet18={r18}, timm:tf_efficientnet_lite0={lite}"
    assert weights_by_backbone(mapping, GRID) == {"resnet18": str(r18), "timm:tf_efficientnet_lite0": str(lite)}
    assert weights_by_backbone(f"resnet18={r18},timm:tf_efficientnet_lite0=none", GRID)[GRID[1]] == "none"


@pytest.mark.parametrize(
    "mapping, fragment",
    [
        ("resnet18={f}", "gives nothing for timm:tf_efficientnet_lite0; add timm:tf_efficientnet_lite0=PATH"),
        ("resnet18={f},densenet121={f},timm:tf_efficientnet_lite0=none", "names densenet121, which is not among"),
        ("resnet18={f}.missing,timm:tf_efficientnet_lite0=none", "weights file not found"),
        ("resnet18,timm:tf_efficientnet_lite0=none", "'resnet18' is not NAME=PATH"),
        # a backbone named twice: the later file silently won (issue 25)
        ("resnet18={f},resnet18=none,timm:tf_efficientnet_lite0=none", "--weights names resnet18 twice"),
        ("resnet18={f},timm:tf_efficientnet_lite0=none,resnet18={f}", "--weights names resnet18 twice"),
    ],
)
def test_mapping_mistakes_are_refused_up_front(tmp_path, mapping, fragment):
    f = _files(tmp_path, "r18.pth") / "r18.pth"
    with pytest.raises(CatdogError, match=fragment.replace("(", r"\(").replace("[", r"\[")):
        weights_by_backbone(mapping.format(f=f), GRID)


def test_folder_matches_files_by_backbone_name_closest_first(tmp_path):
    folder = _files(
        tmp_path / "w",
        "resnet18-f37072fd.pth",
        "vgg16-397923af.pth",
        "vgg16_bn-6c64b313.pth",
        "tf_efficientnet_lite0_imagenet.pth",
        "densenet121.pt",
        "notes.txt",
    )
    found = weights_by_backbone(
        str(folder), ["resnet18", "vgg16", "vgg16_bn", "timm:tf_efficientnet_lite0", "densenet121"]
    )
    assert {b: Path(p).name for b, p in found.items()} == {
        "resnet18": "resnet18-f37072fd.pth",
        "vgg16": "vgg16-397923af.pth",
        "vgg16_bn": "vgg16_bn-6c64b313.pth",
        "timm:tf_efficientnet_lite0": "tf_efficientnet_lite0_imagenet.pth",
        "densenet121": "densenet121.pt",
    }


@pytest.mark.parametrize(
    "files, backbones, fragment",
    [
        (["resnet18.pth"], ["resnet18", "resnet34"], "no weights file for resnet34"),
        (["vgg16_bn-6c64b313.pth"], ["vgg16"], "no weights file for vgg16"),  # another backbone's, not vgg16's
        (["resnet18-a.pth", "resnet18-b.pth"], ["resnet18"], "2 files could be resnet18's"),
        (["resnet18.pth"], ["resnet18", "timm:resnet18"], "would take the same file"),
    ],
)
def test_folder_without_exactly_one_file_per_backbone_is_refused(tmp_path, files, backbones, fragment):
    with pytest.raises(CatdogError, match=fragment):
        weights_by_backbone(str(_files(tmp_path / "w", *files)), backbones)


def test_one_file_fits_a_grid_of_one_backbone_only(tmp_path):
    f = _files(tmp_path, "r18.pth") / "r18.pth"
    assert weights_by_backbone(str(f), ["resnet18"]) == {"resnet18": str(f)}
    with pytest.raises(CatdogError, match="one file, which fits one architecture, not 2 backbones"):
        weights_by_backbone(str(f), GRID)
    with pytest.raises(CatdogError, match="no such file or folder"):
        weights_by_backbone(str(tmp_path / "nope.pth"), ["resnet18"])


def test_each_cell_records_its_own_backbones_weights(tmp_path):
    r18 = _files(tmp_path, "r18.pth") / "r18.pth"
    config = CompareConfig(
        TrainConfig(str(tmp_path), weights=f"resnet18={r18},timm:tf_efficientnet_lite0=none"), backbones=GRID
    )
    config.check()
    assert config.cell("resnet18", "freeze", "cpu").weights == str(r18)
    assert config.cell("timm:tf_efficientnet_lite0", "freeze", "cpu").weights == "none"
    assert config.to_dict()["weights"] == config.train.weights  # compare.json keeps what was asked


def test_presets_expand_in_place_each_backbone_once():
    assert expand_backbones(["seed"]) == list(SEED_BACKBONES)
    assert expand_backbones(["resnet18", "fast", "mobilenet_v3_small"]) == ["resnet18", *BACKBONE_PRESETS["fast"]]
    assert "vit_b_16" in expand_backbones(["modern"])
