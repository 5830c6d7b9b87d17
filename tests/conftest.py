"""Shared fixtures: synthetic labeled image folders made fresh in tmp_path, and one small trained run per session.

The helpers they use (and tests import) live in helpers.py; `pythonpath = ["tests"]` makes it importable.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, TINY, Recorder, make_image, write_class

from catdog_cli.core.config import TrainConfig
from catdog_cli.models.backbones import TORCHVISION
from catdog_cli.training.loop import fit


@pytest.fixture(scope="session", autouse=True)
def no_terminal_size() -> Iterator[None]:
    """The suite sees no COLUMNS or LINES of the shell (or of pytest-xdist's workers, which set COLUMNS=80): catdog
    off a terminal never wraps, and tests that want a width set it themselves."""
    saved = {name: os.environ.pop(name) for name in ("COLUMNS", "LINES") if name in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture
def image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Factory: `image_folder(layout="split"|"flat", classes=("cat", "dog"), train=6, val=3, test=0,
    val_name="val", name="data")` -> the dataset root (a new folder under tmp_path)."""
    counter = itertools.count()

    def make(
        layout: str = "split",
        classes: Sequence[str] = ("cat", "dog"),
        train: int = 6,
        val: int = 3,
        test: int = 0,
        val_name: str = "val",
        name: str | None = None,
    ) -> Path:
        root = tmp_path / (name or f"data{next(counter)}")
        for k, cls in enumerate(classes):
            if layout == "flat":
                write_class(root / cls, k, train + val, 0)
                continue
            if layout != "split":
                raise ValueError(f"unknown layout {layout!r}")
            write_class(root / "train" / cls, k, train, 0)
            if val:
                write_class(root / val_name / cls, k, val, train)
            if test:
                write_class(root / "test" / cls, k, test, train + val)
        return root

    return make


@pytest.fixture(scope="session")
def frozen_run(tmp_path_factory):
    """A freeze run from a state dict the test wrote (flat folder: 8 images per class, 2 of them val)."""
    tmp = tmp_path_factory.mktemp("engine")
    root = tmp / "data"
    for k, cls in enumerate(("cat", "dog")):
        for i in range(8):
            make_image(root / cls / f"{i}.png", CLASS_COLORS[k], ((48, 36), (36, 48))[i % 2], shade=i * 4)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        state = TORCHVISION["resnet18"].build_full().state_dict()
    weights = tmp / "resnet18.pth"
    torch.save(state, weights)
    events = Recorder()
    config = TrainConfig(str(root), strategy="freeze", epochs=2, weights=str(weights), **TINY)
    result = fit(config, tmp / "run", events)
    return {"root": root, "out": tmp / "run", "state": state, "result": result, "events": events, "tmp": tmp}
