"""How a model wants its pixels: the eval crop and resize, the weights' normalization, and the one place a
batch of images becomes model input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from catdog_cli.data.augment import normalize, train_transform
from catdog_cli.data.decode import ImageBatch, ImageSpec

# --- what the model is fed --------------------------------------------------------------------------------


# what a step feeds the model: a batch of images (or of cached features) -> model input
Preprocess = Callable[[ImageBatch, torch.Generator | None], torch.Tensor]


@dataclass
class Inputs:
    """How a model wants its pixels: the eval crop and resize, and the weights' normalization."""

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def eval_spec(self) -> ImageSpec:
        return ImageSpec(train=False, resize=self.resize, crop=self.image_size)

    def train_spec(self, augment: bool) -> ImageSpec:
        """Random crops do not depend on the weights' resize ratio: one decode serves every backbone."""
        if not augment:
            return self.eval_spec()
        return ImageSpec(train=True, resize=round(self.image_size * 256 / 224), crop=self.image_size)

    def model_input(self, batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The one place a batch of images becomes model input: augmented train images, or normalized eval crops."""
        if batch.sizes is None:
            return normalize(batch.images, self.mean, self.std)
        return train_transform(
            batch.images, batch.sizes, batch.transposed, self.image_size, self.mean, self.std, generator
        )
