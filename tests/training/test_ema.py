"""EMA weights: the average follows the model with the documented warmed-up decay, and only what trains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from catdog_cli.errors import CatdogError
from catdog_cli.models.transfer import TransferModel
from catdog_cli.training.ema import EMA


def _model() -> TransferModel:
    torch.manual_seed(0)
    return TransferModel(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2))


def test_average_follows_the_model_with_the_warmed_up_decay():
    model = _model()
    ema = EMA(model, decay=0.9)
    expected = model.head.weight.detach().clone()
    for n, value in enumerate([1.0, 2.0, -1.0, 0.5, 3.0]):
        with torch.no_grad():
            model.head.weight.fill_(value)
        ema.update()
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
        assert torch.allclose(ema.model.head.weight, expected)
    assert [ema.decay_at(n) for n in (0, 1, 80, 10_000)] == pytest.approx([0.1, 2 / 11, 0.9, 0.9])


def test_a_frozen_backbone_is_not_averaged_until_it_is_unfrozen():
    model = _model()
    model.freeze_features()
    ema = EMA(model, decay=0.5)
    assert len(ema._live) == 2  # the head's weight and bias
    with torch.no_grad():
        model.features[0].weight.add_(1.0)  # (only the test moves a frozen weight)
    ema.update()
    assert not torch.equal(ema.model.features[0].weight, model.features[0].weight)
    model.unfreeze_features()
    ema.track(model)  # what freeze-unfreeze does after its frozen epochs
    assert torch.equal(ema.model.features[0].weight, model.features[0].weight)  # starts from the live value
    names = {n for n, _ in model.named_parameters()} | {"features.1.running_mean", "features.1.running_var"}
    assert len(ema._live) == len(names)  # every parameter and the BatchNorm statistics now


def test_the_average_is_a_copy_that_never_trains_and_saves_and_loads():
    model = _model()
    ema = EMA(model, decay=0.99)
    assert all(not p.requires_grad for p in ema.model.parameters()) and not ema.model.training
    with torch.no_grad():
        model.head.bias.fill_(4.0)
    ema.update()
    restored = EMA(_model(), decay=0.99)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 1 and torch.equal(restored.model.head.bias, ema.model.head.bias)


def test_a_saved_average_is_checked_like_every_weight_catdog_loads():
    """A resumed run's EMA from last.pt: another precision converted, NaN refused, a count that is no count refused."""
    ema = EMA(_model(), decay=0.9)
    saved = ema.state_dict()
    half = {k: v.half() if v.is_floating_point() else v for k, v in saved["weights"].items()}
    ema.load_state_dict({"weights": half, "updates": 7})
    assert ema.updates == 7 and all(p.dtype == torch.float32 for p in ema.model.parameters())
    poisoned = {k: v.clone() for k, v in saved["weights"].items()}
    poisoned["head.weight"].fill_(float("nan"))
    with pytest.raises(CatdogError, match=r"not finite \(NaN or infinity in head\.weight\)"):
        ema.load_state_dict({"weights": poisoned, "updates": 7})
    for count in (-1, "7", 7.0):
        with pytest.raises(ValueError):
            ema.load_state_dict({"weights": saved["weights"], "updates": count})
