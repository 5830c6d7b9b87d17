"""What an exported file promises: the graph inside it (uint8 NHWC crops in, calibrated probabilities out) and
the metadata that spells out, step by step, the preprocessing left outside it.

The graph takes what an image library hands over: uint8 RGB in NHWC layout, (N, C, C, 3) at the model's crop size
C, any batch size N. Inside it: scale and normalize as the weights expect, the model, the calibrated temperature,
softmax; out come probabilities (N, classes). What stays outside is decoding, resizing and cropping (the user's
image library does it); the metadata spells that contract out (transparency, 16-bit grayscale, any aspect ratio),
with the class names. With an unknown-image detector in the checkpoint (inference/ood.py) the graph has a second
output, `unknown_score` (N,), computed inside it from the same features; the metadata gives its threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from catdog_cli import __version__
from catdog_cli.data.presets import Preset
from catdog_cli.inference import ood
from catdog_cli.inference.runtimes import INPUT, OUTPUT, SCORE, params_of
from catdog_cli.inference.trained import TrainedModel
from catdog_cli.models.transfer import TransferModel


class Exportable(nn.Module):
    """uint8 NHWC RGB crops -> calibrated class probabilities (and the unknown score, with a detector): everything
    between the crop and the answer."""

    def __init__(self, model: TransferModel, preset: Preset, temperature: float, detector: ood.Detector | None = None):
        super().__init__()
        self.model, self.detector = model, detector
        # the same arithmetic as augment.normalize, so the file computes what catdog computes
        self.register_buffer("mean", torch.tensor(preset.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(preset.std).view(1, 3, 1, 1) * 255)
        self.temperature = temperature

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        features = self.model.features(x)  # TransferModel's forward, in two steps: the detector reads the features
        logits = self.model.head(features[0] if isinstance(features, tuple) else features).float()
        probabilities = (logits / self.temperature).softmax(1)
        if self.detector is None:
            return probabilities
        return probabilities, self.detector(features, logits)


DEEP_GRAY = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")  # Pillow's 16-bit and 32-bit grayscale modes


TRANSPARENT = ("RGBA", "LA", "PA")  # and P with a transparent palette entry


def contract_steps(resize: int, crop: int) -> list[str]:
    """The preprocessing outside the graph, step by step, in Pillow's terms: exactly what catdog's eval decode does
    (data/decode.load_eval_image), for every image catdog accepts. `contract_crop` is these steps as code."""
    return [
        "open the file with Pillow; a JPEG is decoded by draft('RGB', (resize, resize)): at the smallest DCT scale "
        "that still covers resize",
        "apply the EXIF orientation (ImageOps.exif_transpose)",
        f"16-bit or float grayscale (modes {', '.join(DEEP_GRAY)}): stretch the image's own min..max linearly to "
        "0..255 (mode L); a flat image becomes 0",
        f"transparency (modes {', '.join(TRANSPARENT)}, or P with a transparent entry): alpha-composite on opaque "
        "white (Image.alpha_composite)",
        "convert to RGB",
        f"resize the whole image, bilinear (Pillow), so the shorter side is {resize} px and the longer "
        f"int({resize} * longer / shorter) px, whatever the aspect ratio (catdog accepts up to 100:1)",
        f"center-crop {crop}x{crop}, offsets round((side - {crop}) / 2)",
    ]


def contract_crop(path: Path, resize: int, crop: int) -> torch.Tensor:
    """uint8 (crop, crop, 3): `contract_steps` done with plain Pillow from the original file, as the README's snippet
    does, deliberately not through catdog's decoder: the parity check then proves the contract a user is given."""
    with Image.open(path) as opened:
        opened.draft("RGB", (resize, resize))
        im = ImageOps.exif_transpose(opened)
    if im.mode in DEEP_GRAY:
        lo, hi = im.getextrema()
        im = im.convert("F").point(lambda v: (v - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)).convert("L")
    if im.mode in TRANSPARENT or (im.mode == "P" and "transparency" in im.info):
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im.convert("RGBA"))
    im = im.convert("RGB")
    im = im.resize(
        (max(resize, int(resize * im.width / im.height)), max(resize, int(resize * im.height / im.width))),
        Image.Resampling.BILINEAR,
    )
    x, y = round((im.width - crop) / 2), round((im.height - crop) / 2)
    return torch.from_numpy(np.asarray(im.crop((x, y, x + crop, y + crop))).copy())


def metadata(trained: TrainedModel, checkpoint: Path) -> dict[str, Any]:
    """What the file carries besides the graph: enough to use it right without catdog."""
    preset = trained.preset
    return {
        "classes": trained.classes,
        "input": {
            "name": INPUT,
            "layout": "NHWC",
            "dtype": "uint8",
            "channels": "RGB",
            "shape": ["batch", preset.image_size, preset.image_size, 3],
        },
        "output": {
            "name": OUTPUT,
            "shape": ["batch", len(trained.classes)],
            "meaning": "calibrated class probabilities, in the order of classes",
        },
        "preprocessing": {
            "resize": preset.resize,
            "crop": preset.image_size,
            "steps": contract_steps(preset.resize, preset.image_size),
            "in_graph": "x / 255, (x - mean) / std, softmax(logits / temperature)",
            "mean": list(preset.mean),
            "std": list(preset.std),
        },
        "temperature": trained.temperature,
        **_unknown_metadata(trained.detector),
        "backbone": trained.checkpoint["backbone"],
        "params": params_of(trained),
        "checkpoint": str(checkpoint),
        "catdog": __version__,
    }


def _unknown_metadata(detector: ood.Detector | None) -> dict[str, Any]:
    if detector is None:
        return {}
    return {
        "unknown": {
            "output": SCORE,
            "shape": ["batch"],
            "method": detector.method,
            "threshold": detector.threshold,
            "keep": detector.record.get("keep"),
            "meaning": "an image scoring above threshold looks like none of the classes (catdog predict's unknown)",
        }
    }
