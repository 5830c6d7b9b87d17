"""config: keyword-only configs, compare cells made by replace(), and configs read back from older or newer runs."""

from __future__ import annotations

import dataclasses

import pytest

from catdog_cli.core.config import RECIPE_FIELDS, CompareConfig, TrainConfig, check_lr_find
from catdog_cli.errors import CatdogError


def test_train_config_takes_options_by_keyword_only():
    with pytest.raises(TypeError):
        TrainConfig("data", "resnet18")  # type: ignore[misc]
    assert TrainConfig("data", backbone="resnet18").backbone == "resnet18"


def test_compare_cells_share_every_setting_but_backbone_strategy_and_device():
    grid = CompareConfig(TrainConfig("data", epochs=3, lr=0.01, seed=4), backbones=["a", "b"], strategies=["freeze"])
    cell = grid.cell("b", "freeze", "cuda:1")
    assert (cell.backbone, cell.strategy, cell.device) == ("b", "freeze", "cuda:1")
    assert dataclasses.replace(cell, backbone="resnet34", strategy="finetune", device="auto") == grid.train
    assert grid.train.strategy == "finetune" and grid.train.device == "auto"  # the grid's own config is untouched


def test_compare_config_records_the_grid_flat_as_compare_json_did():
    grid = CompareConfig(TrainConfig("data"), backbones=["a"], strategies=["freeze"])
    assert list(grid.to_dict()) == [
        "data",
        "backbones",
        "strategies",
        "epochs",
        "batch_size",
        "lr",
        "lr_ratio",
        "image_size",
        "weights",
        "device",
        "seed",
        "val_split",
        "cache_gib",
        "workers",
        "precision",
        *RECIPE_FIELDS,
    ]
    # recipe options at their defaults are not settings: a compare folder from before they existed still counts;
    # where and how a cell computes may change when an earlier grid is finished
    assert set(grid.settings()) == set(grid.to_dict()) - {
        "backbones",
        "strategies",
        "device",
        "precision",
        "workers",
        *RECIPE_FIELDS,
    }
    mixed = CompareConfig(TrainConfig("data", mixup=0.2), backbones=["a"], strategies=["freeze"])
    assert mixed.settings() == {**grid.settings(), "mixup": 0.2}


def test_the_default_grid_leaves_freeze_unfreeze_out_but_takes_it_when_named(tmp_path):
    assert CompareConfig(TrainConfig("data")).strategies == ["finetune", "freeze", "discriminative"]
    CompareConfig(TrainConfig(str(tmp_path)), strategies=["freeze-unfreeze"]).check()


def test_a_config_saved_by_a_newer_catdog_loads_without_its_new_fields():
    saved = {**dataclasses.asdict(TrainConfig("data", epochs=4)), "some_new_option": True}
    assert TrainConfig.from_dict(saved) == TrainConfig("data", epochs=4)


def test_a_config_saved_before_precision_existed_runs_at_auto():
    saved = dataclasses.asdict(TrainConfig("data", epochs=4))
    del saved["precision"]
    assert TrainConfig.from_dict(saved).precision == "auto"


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"strategy": "thaw"}, "unknown strategy 'thaw'"),
        ({"precision": "fp16"}, "unknown precision 'fp16'"),
    ],
)
def test_check_refuses_what_no_run_can_do(change, match):
    with pytest.raises(CatdogError, match=match):
        TrainConfig("data", **change).check()
    grid = {"strategies": [change["strategy"]]} if "strategy" in change else {}  # a grid's cells take its strategies
    with pytest.raises(CatdogError, match=match):
        CompareConfig(TrainConfig("data", **change), **grid).check()


@pytest.mark.parametrize("field", ["mixup", "cutmix", "label_smoothing", "ema_decay", "patience", "freeze_epochs"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1])
def test_a_recipe_number_out_of_range_or_not_finite_is_refused(tmp_path, field, value):
    with pytest.raises(CatdogError, match="--" + field.replace("_", "-")):
        TrainConfig(str(tmp_path), **{field: value}).check()


@pytest.mark.parametrize(
    ("start", "end", "steps", "strategies", "match"),
    [
        (1e-7, float("inf"), 100, ["freeze"], "--end-lr"),
        (float("nan"), 10.0, 100, ["freeze"], "--start-lr"),
        (1e-3, 1e-4, 100, ["freeze"], "start < end"),
        (1e-7, 1e7, 100, ["freeze"], "end <= 1e\\+06"),
        (1e-7, 10.0, 10, ["freeze"], "--steps 10"),
        (1e-7, 10.0, 100, [], "--strategies"),
        (1e-7, 10.0, 100, ["thaw"], "unknown strategy 'thaw'"),
    ],
)
def test_lr_find_options_are_refused_before_any_work(tmp_path, start, end, steps, strategies, match):
    with pytest.raises(CatdogError, match=match):
        check_lr_find(TrainConfig(str(tmp_path)), strategies, start, end, steps)


def test_lr_find_refuses_to_run_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(CatdogError, match="not torchrun"):
        check_lr_find(TrainConfig(str(tmp_path)), ["freeze"], 1e-7, 10.0, 100)
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    check_lr_find(TrainConfig(str(tmp_path)), ["freeze"], 1e-7, 10.0, 100)


def test_a_grid_refuses_up_front_what_train_refuses_for_one_of_its_strategies(tmp_path):
    """`compare --strategies freeze-unfreeze --epochs 1` failed in every cell; train refuses it before any work."""
    grid = CompareConfig(TrainConfig(str(tmp_path), epochs=1), backbones=["resnet18"], strategies=["freeze-unfreeze"])
    with pytest.raises(CatdogError, match=r"freeze-unfreeze: --freeze-epochs \(1\) must be fewer than --epochs \(1\)"):
        grid.check()
    CompareConfig(TrainConfig(str(tmp_path), epochs=1), backbones=["resnet18"], strategies=["freeze"]).check()


@pytest.mark.parametrize(
    ("strategies", "backbones", "twice"),
    [
        (["freeze", "freeze"], ["resnet18"], "--strategies names freeze twice"),
        (["freeze", "finetune", "freeze"], ["resnet18"], "--strategies names freeze twice"),
        (["freeze"], ["resnet18", "resnet18"], "--backbones names resnet18 twice"),
    ],
)
def test_a_grid_naming_a_strategy_or_backbone_twice_is_refused(tmp_path, strategies, backbones, twice):
    """`--strategies freeze,freeze` trained the same cells twice (and was more likely a typo for another one)."""
    with pytest.raises(CatdogError, match=f"^{twice}; name each once$"):
        CompareConfig(TrainConfig(str(tmp_path)), backbones=backbones, strategies=strategies).check()


def test_lr_find_naming_a_strategy_twice_is_refused(tmp_path):
    with pytest.raises(CatdogError, match=r"^--strategies names freeze twice; name each once$"):
        check_lr_find(TrainConfig(str(tmp_path)), ["freeze", "freeze"], 1e-7, 10.0, 100)
