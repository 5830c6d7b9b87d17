"""Transfer strategies as data (core.defaults.STRATEGIES) and their parameter groups (models.strategies)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from catdog_cli.core.defaults import GRID_STRATEGIES, STRATEGIES
from catdog_cli.errors import CatdogError
from catdog_cli.models.backbones import build_model
from catdog_cli.models.strategies import GROUPS, param_groups


@pytest.fixture(scope="module")
def base():
    return build_model("resnet18", 2, weights="none", seed=0)


@pytest.fixture
def model(base):
    return copy.deepcopy(base)


def _ids(params) -> list[int]:
    return [id(p) for p in params]


def test_finetune_trains_everything_at_one_rate(model):
    groups = param_groups("finetune", model, lr=0.01)
    assert len(groups) == 1 and groups[0]["lr"] == 0.01
    assert sorted(_ids(groups[0]["params"])) == sorted(_ids(model.parameters()))
    assert all(p.requires_grad for p in model.parameters())


def test_default_learning_rates_per_strategy(model):
    for strategy in STRATEGIES:
        groups = param_groups(strategy, copy.deepcopy(model))
        assert groups[-1]["lr"] == STRATEGIES[strategy].lr


def test_freeze_trains_only_the_head_and_keeps_bn_statistics(model):
    groups = param_groups("freeze", model, lr=0.1)
    assert len(groups) == 1
    assert sorted(_ids(groups[0]["params"])) == sorted(_ids(model.head.parameters()))
    assert not any(p.requires_grad for p in model.features.parameters())

    model.train()  # the engine calls train() every epoch: the frozen backbone must stay in eval mode
    assert model.head.training
    assert not any(m.training for m in model.features.modules())

    before = copy.deepcopy(model.features.state_dict())
    optimizer = torch.optim.SGD(groups)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32) * 3 + 1), torch.tensor([0, 1, 0, 1]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "backbone weights or BN running stats changed"
    assert all(p.grad is None for p in model.features.parameters()), "a backward pass went through the backbone"


def test_freeze_features_run_without_autograd(model):
    param_groups("freeze", model, lr=0.1)
    seen = []
    model.features.register_forward_hook(lambda mod, inp, out: seen.append(out.requires_grad))
    out = model.train()(torch.randn(2, 3, 32, 32))
    assert seen == [False] and out.requires_grad  # only the head builds a graph


def test_discriminative_backbone_is_lr_ratio_slower(model):
    groups = param_groups("discriminative", model, lr=0.02, lr_ratio=4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.005)
    assert by_name["head"]["lr"] == pytest.approx(0.02)
    assert sorted(_ids(by_name["backbone"]["params"])) == sorted(_ids(model.features.parameters()))
    assert sorted(_ids(by_name["head"]["params"])) == sorted(_ids(model.head.parameters()))
    assert all(p.requires_grad for p in model.parameters())


def test_discriminative_step_sizes_follow_the_group_rates(model):
    """With plain SGD the update is lr * grad: the backbone's is exactly lr_ratio times smaller."""
    groups = param_groups("discriminative", model, lr=0.1, lr_ratio=10)
    optimizer = torch.optim.SGD(groups)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 1, 0])
    nn.functional.cross_entropy(model(x), y).backward()
    conv, fc = model.features.conv1.weight, model.head.weight
    conv_before, fc_before = conv.detach().clone(), fc.detach().clone()
    conv_grad, fc_grad = conv.grad.clone(), fc.grad.clone()
    optimizer.step()
    torch.testing.assert_close(conv_before - conv.detach(), 0.01 * conv_grad)
    torch.testing.assert_close(fc_before - fc.detach(), 0.1 * fc_grad)


def test_bad_strategy_or_ratio_is_a_catdog_error(model):
    with pytest.raises(CatdogError, match="unknown strategy 'thaw'"):
        param_groups("thaw", model)
    with pytest.raises(CatdogError, match="lr-ratio"):
        param_groups("discriminative", model, lr_ratio=0)


def test_freeze_unfreeze_starts_frozen_with_both_groups_and_unfreezes_at_discriminative_rates(model):
    groups = param_groups("freeze-unfreeze", model, lr=0.1, lr_ratio=10)
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["lr"] == pytest.approx(0.01) and by_name["head"]["lr"] == 0.1
    assert model.frozen and not any(p.requires_grad for p in model.features.parameters())
    optimizer = torch.optim.AdamW(groups)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 1, 0])
    before = copy.deepcopy(model.state_dict())

    def step() -> set[str]:
        model.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        now = model.state_dict()
        return {k.split(".")[0] for k in before if not torch.equal(before[k], now[k])}

    assert step() == {"head"}  # frozen: no weight decay, no BatchNorm statistics, nothing in the backbone moves
    model.unfreeze_features()
    assert step() == {"head", "features"} and all(p.requires_grad for p in model.parameters())


def test_unfreeze_epoch_only_for_freeze_unfreeze():
    assert STRATEGIES["freeze-unfreeze"].unfreeze_epoch(2) == 2
    assert all(STRATEGIES[s].unfreeze_epoch(2) is None for s in ("finetune", "freeze", "discriminative"))
    assert "freeze-unfreeze" in STRATEGIES and "freeze-unfreeze" not in GRID_STRATEGIES


def test_only_freeze_caches_features_and_every_record_has_a_builder():
    assert [name for name, s in STRATEGIES.items() if s.caches_features] == ["freeze"]
    assert {s.groups for s in STRATEGIES.values()} == set(GROUPS)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_record_that_starts_frozen_leaves_no_backbone_gradients(model, name):
    param_groups(name, model)
    frozen = not any(p.requires_grad for p in model.features.parameters())
    assert model.frozen == frozen == STRATEGIES[name].frozen
