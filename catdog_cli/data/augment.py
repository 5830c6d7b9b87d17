"""The classic transforms, per sample, on whole batches on the device; and MixUp/CutMix, per batch.

RandomResizedCrop(scale=(0.08, 1), ratio=(3/4, 4/3)) + horizontal flip + normalize for training, with the
same box distribution as torchvision's `RandomResizedCrop.get_params`, sampled for a whole batch at once
(no host sync) and cropped-and-resized in one `roi_align` call (bilinear, half-pixel aligned like
`F.interpolate(align_corners=False)`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10


def sample_boxes(
    sizes: torch.Tensor, generator: torch.Generator | None = None, scale=SCALE, ratio=RATIO, attempts: int = ATTEMPTS
) -> torch.Tensor:
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


def train_transform(
    images: torch.Tensor,
    sizes: torch.Tensor,
    transposed: torch.Tensor,
    size: int,
    mean,
    std,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RandomResizedCrop(size) + RandomHorizontalFlip + Normalize of a padded uint8 batch."""
    boxes = sample_boxes(sizes, generator)
    rois = torch.cat([torch.arange(len(boxes), device=boxes.device, dtype=boxes.dtype)[:, None], boxes], dim=1)
    crops = roi_align(images.float(), rois, output_size=size, spatial_scale=1.0, sampling_ratio=2, aligned=True)
    # portraits were stored on their side; the box distribution is symmetric, so turning back is exact
    crops = torch.where(transposed[:, None, None, None], crops.transpose(2, 3), crops)
    flip = torch.rand(len(crops), generator=generator, device=crops.device) < 0.5
    crops = torch.where(flip[:, None, None, None], crops.flip(3), crops)
    return normalize(crops, mean, std)


# --- batch-level: MixUp and CutMix ----------------------------------------------------------------------------


def sample_beta(alpha: float, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """One Beta(alpha, alpha) draw as a 0-d tensor on `device`, from `generator`: X / (X + Y) of two Gamma draws
    (torch.distributions cannot take a generator; its own sampler, `_standard_gamma`, can)."""
    gammas = torch._standard_gamma(torch.full((2,), float(alpha), device=device), generator=generator)
    gammas = gammas.clamp_min(1e-12)  # tiny alphas can underflow both to 0
    return gammas[0] / gammas.sum()


def cutmix_mask(
    height: int, width: int, lam: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (H, W) mask of one box covering about 1 - lam of the image, centred uniformly (clipped at the border,
    as in the CutMix paper), and the weight of the original image that the clipped box really leaves."""
    device = lam.device
    cut = torch.sqrt(1 - lam)
    centre = torch.rand(2, generator=generator, device=device) * torch.tensor([height, width], device=device)
    half = cut * torch.tensor([height, width], device=device) / 2
    low, high = (centre - half).round().clamp_min(0), (centre + half).round()
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    inside_rows = (rows >= low[0]) & (rows < high[0])
    inside_cols = (cols >= low[1]) & (cols < high[1])
    mask = inside_rows[:, None] & inside_cols[None, :]
    return mask, 1 - mask.sum() / (height * width)


@dataclass(frozen=True)
class Mixing:
    """MixUp and/or CutMix of a whole batch on the device, without a host sync: each image is mixed with the
    batch's mirror image (batch order is already random), with one weight `lam` per batch drawn from
    Beta(alpha, alpha); the labels are mixed with the same `lam` as the pixels. With both on, each batch uses one
    of the two (even odds), as timm does."""

    num_classes: int
    mixup: float = 0.0
    cutmix: float = 0.0

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None
    ) -> MixedBatch:
        device = images.device
        partner = images.flip(0)
        if self.mixup > 0:
            lam = sample_beta(self.mixup, device, generator)
            mixed = lam * images + (1 - lam) * partner
        if self.cutmix > 0:
            mask, lam_cut = cutmix_mask(
                images.shape[2], images.shape[3], sample_beta(self.cutmix, device, generator), generator
            )
            pasted = torch.where(mask, partner, images)
            if self.mixup > 0:  # one of the two, chosen on the device
                use_cut = torch.rand((), generator=generator, device=device) < 0.5
                mixed, lam = torch.where(use_cut, pasted, mixed), torch.where(use_cut, lam_cut, lam)
            else:
                mixed, lam = pasted, lam_cut
        one_hot = F.one_hot(labels, self.num_classes).float()
        targets = lam * one_hot + (1 - lam) * one_hot.flip(0)
        majority = torch.where(lam >= 0.5, labels, labels.flip(0))
        return MixedBatch(mixed.contiguous(memory_format=torch.channels_last), targets, majority)


@dataclass
class MixedBatch:
    images: torch.Tensor
    targets: torch.Tensor  # (B, classes) class probabilities
    labels: torch.Tensor  # the class with the larger weight in each image: what train accuracy counts
