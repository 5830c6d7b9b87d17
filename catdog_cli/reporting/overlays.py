"""Heat maps drawn over images: what the model saw, colored by where it looked (explain.py makes the maps).

Torch-free (numpy and Pillow), so the HTML report draws its top-loss overlays straight from run.json.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# a blue -> cyan -> yellow -> red ramp: low attention cool, high attention hot, readable for most color vision
RAMP = np.array(
    [(48, 18, 160), (30, 150, 230), (60, 210, 140), (250, 220, 50), (240, 90, 30), (200, 20, 20)], dtype=np.float32
)


def model_view(image: Image.Image, crop: float) -> Image.Image:
    """The centered square the model saw: the eval transform (resize, center crop) keeps `crop` of the short side."""
    side = max(1, round(min(image.size) * crop))
    left, top = round((image.width - side) / 2), round((image.height - side) / 2)
    return image.crop((left, top, left + side, top + side))


def colorize(values: np.ndarray) -> np.ndarray:
    """0..1 values -> RGB floats along RAMP."""
    position = np.clip(values, 0.0, 1.0) * (len(RAMP) - 1)
    low = np.minimum(position.astype(int), len(RAMP) - 2)
    frac = (position - low)[..., None]
    return RAMP[low] * (1 - frac) + RAMP[low + 1] * frac


def overlay(view: Image.Image, grid: Sequence[Sequence[float]] | np.ndarray, size: int | None = None) -> Image.Image:
    """The map, smoothly upsampled, over the view: the image shows through where the model hardly looked."""
    view = view.convert("RGB")
    if size is not None:
        view = view.resize((size, size), Image.Resampling.BICUBIC)
    heat = Image.fromarray(np.asarray(grid, dtype=np.float32)).resize(view.size, Image.Resampling.BILINEAR)
    values = np.asarray(heat)
    alpha = (0.25 + 0.5 * np.clip(values, 0.0, 1.0))[..., None]
    blended = np.asarray(view, dtype=np.float32) * (1 - alpha) + colorize(values) * alpha
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))


def caption(image: Image.Image, text: str) -> Image.Image:
    """The image with a dark strip under it that names the prediction."""
    font = ImageFont.load_default(size=max(11, image.width // 22))
    left, top, _, bottom = font.getbbox(text)
    pad = max(3, image.width // 80)
    out = Image.new("RGB", (image.width, image.height + bottom - top + 2 * pad), (20, 20, 20))
    out.paste(image, (0, 0))
    ImageDraw.Draw(out).text((pad - left, image.height + pad - top), text, fill=(245, 245, 245), font=font)
    return out
