"""Shared fixtures: synthetic labeled image folders, made fresh in tmp_path by each test that asks.

`image_folder(...)` writes tiny images whose color depends on the class (so a model can tell classes apart),
in mixed sizes and orientations (landscape, portrait, square) and mixed formats (PNG and JPEG), in either
layout catdog reads:

    image_folder()                          -> ROOT/train/<class>/*, ROOT/val/<class>/*
    image_folder(val_name="validation")     -> ROOT/train/<class>/*, ROOT/validation/<class>/*
    image_folder(layout="flat")             -> ROOT/<class>/*   (catdog splits it stratified)
    image_folder(test=2)                    -> also ROOT/test/<class>/* with 2 images per class

`make_image(path, color, size)` writes one such image; `SHARED` is `../shared` (real data, may be absent).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"

# One color per class (RGB), far apart so that even a random-init network sees a difference.
CLASS_COLORS = [(220, 40, 40), (40, 60, 220), (40, 200, 60), (230, 200, 30), (160, 40, 200)]
# (width, height): landscape, portrait, square, wide, tall. Small, so decoding costs nothing.
SIZES = [(48, 36), (36, 48), (40, 40), (64, 30), (30, 64)]


def make_image(path: Path, color: Sequence[int], size: tuple[int, int] = (48, 36), shade: int = 0) -> Path:
    """An image of `color` with a darker band across its top third (so it is not flat); format from the suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    base = tuple(max(0, min(255, c + shade)) for c in color)
    im = Image.new("RGB", size, base)
    im.paste(tuple(c // 2 for c in base), (0, 0, size[0], max(1, size[1] // 3)))
    im.save(path)
    return path


def _write_class(folder: Path, class_index: int, count: int, offset: int) -> None:
    color = CLASS_COLORS[class_index % len(CLASS_COLORS)]
    for i in range(count):
        n = offset + i
        suffix = ".png" if n % 2 == 0 else ".jpg"
        make_image(folder / f"img{n:03d}{suffix}", color, SIZES[n % len(SIZES)], shade=(n % 5) * 6 - 12)


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `image_folder(layout="split"|"flat", classes=("cat", "dog"), train=6, val=3, test=0,
    val_name="val", name="data")` -> the dataset root (a new folder under tmp_path)."""
    counter = itertools.count()

    def make(layout: str = "split", classes: Sequence[str] = ("cat", "dog"), train: int = 6, val: int = 3,
             test: int = 0, val_name: str = "val", name: str | None = None) -> Path:
        root = tmp_path / (name or f"data{next(counter)}")
        for k, cls in enumerate(classes):
            if layout == "flat":
                _write_class(root / cls, k, train + val, 0)
                continue
            if layout != "split":
                raise ValueError(f"unknown layout {layout!r}")
            _write_class(root / "train" / cls, k, train, 0)
            if val:
                _write_class(root / val_name / cls, k, val, train)
            if test:
                _write_class(root / "test" / cls, k, test, train + val)
        return root

    return make
