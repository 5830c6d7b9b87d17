"""Test-time augmentation (evaluate/predict --tta): class probabilities averaged over several views of an image.

Views come from the eval resize's whole central square (256 px for a 224 crop), not from the crop alone:
- "flip": the usual centre crop and its mirror image;
- "flip+crops": the centre and the four corner crops, each also mirrored (the classic ten-crop).
The model sees crops of the size it was trained on; what comes out are the log of the mean probabilities,
so argmax, softmax and cross-entropy downstream read them like logits.
"""

from __future__ import annotations

import torch
from torch import nn

from catdog_cli.core.defaults import DEFAULT_TTA
from catdog_cli.data.presets import Preset

TTA_VIEWS = ("flip", "flip+crops")


class TTAModel(nn.Module):
    def __init__(self, model: nn.Module, crop: int, views: str = DEFAULT_TTA):
        super().__init__()
        self.model, self.crop, self.corners = model, crop, views == "flip+crops"

    @property
    def views(self) -> int:
        """Model calls per batch: each crop and its mirror image."""
        return 2 * (5 if self.corners else 1)

    def offsets(self, size: int) -> list[tuple[int, int]]:
        """(top, left) of each crop in a size x size square: the centre first."""
        centre, far = (size - self.crop) // 2, size - self.crop
        corners = [(0, 0), (0, far), (far, 0), (far, far)] if self.corners else []
        return [(centre, centre), *corners]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.zeros((), device=x.device)
        views = 0
        for top, left in self.offsets(x.shape[-1]):
            view = x[:, :, top : top + self.crop, left : left + self.crop]
            for image in (view, view.flip(3)):
                probs = probs + self.model(image.contiguous(memory_format=torch.channels_last)).float().softmax(1)
                views += 1
        return (probs / views).clamp_min(1e-12).log()


def with_tta(model: nn.Module, preset: Preset, views: str = DEFAULT_TTA) -> tuple[nn.Module, Preset]:
    """The model behind test-time augmentation, and the preset that decodes the eval resize's whole central square."""
    return TTAModel(model, preset.image_size, views).eval(), preset.square()
