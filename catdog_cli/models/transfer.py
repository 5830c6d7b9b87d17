"""A model made for transfer (`TransferModel`): the pretrained `features` and a new `head` for N classes, the only
split strategies and the engine ever see; its new head's initialization, and its parameter counts.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class TransferModel(nn.Module):
    """features -> head. With a frozen backbone the features run without autograd (no backward through them)."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head
        self.frozen = False

    def freeze_features(self) -> None:
        self.frozen = True
        self.features.requires_grad_(False)
        self.features.eval()

    def unfreeze_features(self) -> None:
        """The whole model trains from here on (freeze-unfreeze after its frozen epochs)."""
        self.frozen = False
        self.features.requires_grad_(True)
        self.features.train(self.training)

    def train(self, mode: bool = True) -> TransferModel:
        super().train(mode)
        if self.frozen:
            self.features.eval()  # BatchNorm statistics stay those of the pretrained weights
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                x = self.features(x)
        else:
            x = self.features(x)
        if isinstance(x, tuple):  # models with auxiliary outputs (GoogLeNet, Inception) in train mode
            x = x[0]
        return self.head(x)


def init_head(head: nn.Module, seed: int | None) -> nn.Module:
    """PyTorch's default init for Linear and Conv layers (uniform in +-1/sqrt(fan_in)), drawn from a generator
    of the head's own: the same new head for the same seed on every rank and in every compare cell."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for layer in head.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                bound = 1 / math.sqrt(layer.weight[0].numel())
                for p in (layer.weight, layer.bias):
                    if p is not None:
                        p.uniform_(-bound, bound, generator=generator)
    return head


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
