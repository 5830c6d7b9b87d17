"""Transfer strategies: each is a function (model, lr, lr_ratio) -> optimizer parameter groups.

- finetune: everything trains from the pretrained weights with one learning rate.
- freeze: only the new head trains; the backbone gets no gradients and keeps its BatchNorm statistics.
- discriminative: everything trains, the pretrained part `lr_ratio` times slower than the new head.
- freeze-unfreeze (fastai's fine_tune): `freeze_epochs` epochs head only, then everything with the rates of
  discriminative. Both groups exist from the start; the backbone's gets no gradients until `unfreeze`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from catdog_cli.core.defaults import DEFAULT_LR, STRATEGY_NAMES
from catdog_cli.errors import CatdogError

if TYPE_CHECKING:
    from catdog_cli.models.backbones import TransferModel

ParamGroups = list[dict]


def finetune(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]


def freeze(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    model.freeze_features()
    return [{"params": list(model.head.parameters()), "lr": lr, "name": "head"}]


def discriminative(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    return [
        {"params": list(model.features.parameters()), "lr": lr / lr_ratio, "name": "backbone"},
        {"params": list(model.head.parameters()), "lr": lr, "name": "head"},
    ]


def freeze_unfreeze(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    """AdamW skips parameters without a gradient: the frozen backbone's group waits, untouched, for `unfreeze`."""
    groups = discriminative(model, lr, lr_ratio)
    model.freeze_features()
    return groups


STRATEGIES: dict[str, Callable[[TransferModel, float, float], ParamGroups]] = dict(
    zip(STRATEGY_NAMES, (finetune, freeze, discriminative, freeze_unfreeze), strict=True)
)


def unfreeze_epoch(strategy: str, freeze_epochs: int) -> int | None:
    """The epoch (0-based) from which a strategy trains the whole model after a frozen start, or None."""
    return freeze_epochs if strategy == "freeze-unfreeze" else None


def param_groups(strategy: str, model: TransferModel, lr: float | None = None, lr_ratio: float = 10.0) -> ParamGroups:
    if strategy not in STRATEGIES:
        raise CatdogError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if lr_ratio <= 0:
        raise CatdogError("--lr-ratio must be positive")
    return STRATEGIES[strategy](model, DEFAULT_LR[strategy] if lr is None else lr, lr_ratio)
