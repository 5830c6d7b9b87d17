"""How a model wants its pixels (torchvision's references/classification `presets.py`): one `Preset` of eval crop,
eval resize and the weights' normalization, which train, evaluate, predict, test-time augmentation, export,
explain and check all read, and the one place a batch of images becomes model input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from catdog_cli.data.augment import normalize, train_transform
from catdog_cli.data.decode import ImageBatch, ImageSpec

# what a step feeds the model: a batch of images (or of cached features) -> model input
Preprocess = Callable[[ImageBatch, torch.Generator | None], torch.Tensor]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """How a model wants its pixels: the eval crop (`image_size`, as --image-size and a checkpoint name it) and
    resize, and the weights' normalization. A backbone's weights have one (`backbones.weights_preset`);
    `for_crop` keeps its resize/crop ratio at another crop size."""

    image_size: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping[str, Any]) -> Preset:
        """A checkpoint's model's preset, from the fields it stores (`checkpoint_fields`)."""
        return cls(ckpt["image_size"], ckpt["resize"], tuple(ckpt["mean"]), tuple(ckpt["std"]))

    @classmethod
    def from_metadata(cls, preprocessing: Mapping[str, Any]) -> Preset:
        """An exported file's preset, from its metadata's `preprocessing` (crop, resize, mean, std); a value of
        the wrong type raises KeyError, TypeError or ValueError for the caller to refuse the file with."""
        p = preprocessing
        return cls(int(p["crop"]), int(p["resize"]), tuple(map(float, p["mean"])), tuple(map(float, p["std"])))

    def checkpoint_fields(self) -> dict[str, Any]:
        """What a checkpoint stores of it (`from_checkpoint` reads it back): image_size, resize, mean, std."""
        return {"image_size": self.image_size, "resize": self.resize, "mean": list(self.mean), "std": list(self.std)}

    def for_crop(self, image_size: int) -> Preset:
        """The same weights at another crop size, keeping their resize/crop ratio (256/224 classically)."""
        return Preset(image_size, int(round(image_size * self.resize / self.image_size)), self.mean, self.std)

    def square(self) -> Preset:
        """Decoding the eval resize's whole central square (test-time augmentation takes its views from it)."""
        side = max(self.resize, self.image_size)
        return Preset(side, side, self.mean, self.std)

    @property
    def crop_share(self) -> float:
        """The part of the resized image's short side the eval crop keeps (224 / 256)."""
        return self.image_size / self.resize

    def eval_spec(self) -> ImageSpec:
        return ImageSpec(train=False, resize=self.resize, crop=self.image_size)

    def train_spec(self, augment: bool) -> ImageSpec:
        """Random crops do not depend on the weights' resize ratio: one decode (ImageNet's ratio) serves every
        backbone."""
        if not augment:
            return self.eval_spec()
        return ImageSpec(train=True, resize=IMAGENET.for_crop(self.image_size).resize, crop=self.image_size)

    def model_input(self, batch: ImageBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """The one place a batch of images becomes model input: augmented train images, or normalized eval crops."""
        if batch.sizes is None:
            return normalize(batch.images, self.mean, self.std)
        return train_transform(
            batch.images, batch.sizes, batch.transposed, self.image_size, self.mean, self.std, generator
        )


# torchvision's classic ImageNet evaluation: resize 256, crop 224, ImageNet's mean and std
IMAGENET = Preset(224, 256, IMAGENET_MEAN, IMAGENET_STD)
