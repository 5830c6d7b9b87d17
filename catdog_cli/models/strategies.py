"""Transfer strategies' parameter groups: the torch half of the records in `core.defaults.STRATEGIES`.

- finetune: everything trains from the pretrained weights with one learning rate.
- freeze: only the new head trains; the backbone gets no gradients and keeps its BatchNorm statistics.
- discriminative: everything trains, the pretrained part `lr_ratio` times slower than the new head.
- freeze-unfreeze (fastai's fine_tune): `freeze_epochs` epochs head only, then everything with the rates of
  discriminative. Both groups exist from the start; the backbone's gets no gradients until `unfreeze`.

A record names its `groups` layout and whether it starts `frozen`; here each layout has its builder, so a new
strategy is one line in the table, not a new branch wherever strategies differ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from catdog_cli.core.defaults import STRATEGIES
from catdog_cli.errors import CatdogError

if TYPE_CHECKING:
    from catdog_cli.models.transfer import TransferModel

ParamGroups = list[dict]


def _all(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]


def _head(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    return [{"params": list(model.head.parameters()), "lr": lr, "name": "head"}]


def _split(model: TransferModel, lr: float, lr_ratio: float) -> ParamGroups:
    return [
        {"params": list(model.features.parameters()), "lr": lr / lr_ratio, "name": "backbone"},
        {"params": list(model.head.parameters()), "lr": lr, "name": "head"},
    ]


# a strategy record's `groups` -> its builder (model, lr, lr_ratio) -> optimizer parameter groups
GROUPS: dict[str, Callable[[TransferModel, float, float], ParamGroups]] = {"all": _all, "head": _head, "split": _split}


def param_groups(strategy: str, model: TransferModel, lr: float | None = None, lr_ratio: float = 10.0) -> ParamGroups:
    """The strategy's groups at `lr` (default: its own), its backbone frozen when it starts frozen. AdamW skips
    parameters without a gradient: a frozen backbone's group (freeze-unfreeze) waits, untouched, for `unfreeze`."""
    if strategy not in STRATEGIES:
        raise CatdogError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    if lr_ratio <= 0:
        raise CatdogError("--lr-ratio must be positive")
    how = STRATEGIES[strategy]
    groups = GROUPS[how.groups](model, how.lr if lr is None else lr, lr_ratio)
    if how.frozen:
        model.freeze_features()
    return groups
