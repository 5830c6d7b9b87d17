"""The learning-rate schedule: warm-up then cosine, restarted when freeze-unfreeze unfreezes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from catdog_cli.core.config import TrainConfig
from catdog_cli.core.defaults import STRATEGIES


def lr_factor(config: TrainConfig, steps: int) -> Callable[[int], float]:
    """Warm-up then cosine decay over the run; freeze-unfreeze starts a second one when the whole model joins
    (as fastai's fine_tune does): the backbone's first steps are warmed up too."""
    total = config.epochs * steps
    restart = STRATEGIES[config.strategy].unfreeze_epoch(config.freeze_epochs)
    if restart is None:
        return warmup_cosine(total)
    first, second = restart * steps, total - restart * steps
    frozen, unfrozen = warmup_cosine(first), warmup_cosine(second)
    return lambda step: frozen(step) if step < first else unfrozen(step - first)


def warmup_cosine(total_steps: int, warmup: int | None = None) -> Callable[[int], float]:
    """LR multiplier: linear warm-up (by default over 5 % of the steps, at most 100), then cosine decay to zero."""
    if warmup is None:
        warmup = min(100, max(1, total_steps // 20))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def lr_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int | Callable[[int], float]
) -> torch.optim.lr_scheduler.LambdaLR:
    """Warm-up then cosine decay to zero at `total_steps` (or the LR multiplier given)."""
    factor = total_steps if callable(total_steps) else warmup_cosine(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
