"""A frozen backbone's features of each image, computed once: near-duplicates compare them, the label check trains a
linear probe on them. Unit length, so a dot product is a cosine similarity."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from catdog_cli.data.augment import normalize
from catdog_cli.data.presets import Preset
from catdog_cli.models.backbones import build_model, preset_for
from catdog_cli.models.transfer import TransferModel
from catdog_cli.runtime.device import resolve_device


class Backbone:
    """The pretrained part of a backbone, in eval mode, and how it wants its pixels."""

    def __init__(self, name: str, weights: str, image_size: int | None, device: str) -> None:
        self.name = name
        self.device = resolve_device(device)
        self.preset: Preset = preset_for(name, image_size)
        model: TransferModel = build_model(name, 2, weights, self.device, seed=0)
        self.features = model.features.eval()

    @torch.inference_mode()
    def __call__(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Unit-length float32 features (B, D) of eval crops (each uint8 H x W x 3), on the CPU."""
        images = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2)
        x = self.features(normalize(images, self.preset.mean, self.preset.std))
        if isinstance(x, tuple):
            x = x[0]
        if x.dim() > 2:  # a feature map (torchvision's `features` of VGG, DenseNet...): pooled to a vector
            x = F.adaptive_avg_pool2d(x, 1)
        return F.normalize(x.flatten(1).float(), dim=1).cpu()
