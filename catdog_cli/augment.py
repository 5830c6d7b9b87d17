"""The classic transforms, per sample, on whole batches on the device.

RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip + normalize for training, with the
same box distribution as torchvision's `RandomResizedCrop.get_params`, sampled for a whole batch at once
(no host sync) and cropped-and-resized in one `roi_align` call (bilinear, half-pixel aligned like
`F.interpolate(align_corners=False)`).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import roi_align

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


def sample_boxes(sizes: torch.Tensor, generator: torch.Generator | None = None, scale=SCALE, ratio=RATIO,
                 attempts: int = ATTEMPTS) -> torch.Tensor:
    """(B, 4) boxes x1, y1, x2, y2 in pixels, one RandomResizedCrop draw per image of valid (h, w) `sizes`."""
    height, width = sizes[:, 0:1].float(), sizes[:, 1:2].float()
    n, device = len(sizes), sizes.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device=device)

    area = height * width * (scale[0] + (scale[1] - scale[0]) * uniform(n, attempts))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniform(n, attempts))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # first attempt that fits, as torchvision's loop
    w, h = w.gather(1, first), h.gather(1, first)
    found = ok.any(dim=1, keepdim=True)

    # torchvision's fallback: the largest central crop with the ratio clamped into range
    in_ratio = width / height
    fw = torch.where(in_ratio > ratio[1], torch.round(height * ratio[1]), width)
    fh = torch.where(in_ratio < ratio[0], torch.round(width / ratio[0]), height)
    w, h = torch.where(found, w, fw), torch.where(found, h, fh)

    top = torch.where(found, torch.floor(uniform(n, 1) * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(found, torch.floor(uniform(n, 1) * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.cat([left, top, left + w, top + h], dim=1)


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or float in [0, 255] -> normalized float32, channels_last (faster convolutions on CUDA)."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1) * 255
    out = (images.float() - mean_t) / std_t
    return out.contiguous(memory_format=torch.channels_last)


def train_transform(images: torch.Tensor, sizes: torch.Tensor, transposed: torch.Tensor, size: int, mean, std,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip + Normalize of a padded uint8 batch."""
    boxes = sample_boxes(sizes, generator)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    crops = roi_align(images.float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # portraits were stored on their side; the box distribution is symmetric, so turning back is exact
    crops = torch.where(transposed[:, None, None, None], crops.transpose(2, 3), crops)
    flip = torch.rand(len(crops), generator=generator, device=crops.device) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(3), crops)
    return normalize(crops, mean, std)
