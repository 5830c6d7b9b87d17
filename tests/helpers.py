"""Test helpers: synthetic labeled images and folders, the CLI run in-process, and what its results say.

conftest.py's `image_folder(...)` writes tiny images whose color depends on the class (so a model can tell
classes apart), in mixed sizes and orientations (landscape, portrait, square) and mixed formats (PNG and
JPEG), in either layout catdog reads:

    image_folder()                          -> ROOT/train/<class>/*, ROOT/val/<class>/*
    image_folder(val_name="validation")     -> ROOT/train/<class>/*, ROOT/validation/<class>/*
    image_folder(layout="flat")             -> ROOT/<class>/*   (catdog splits it stratified)
    image_folder(test=2)                    -> also ROOT/test/<class>/* with 2 images per class

`make_image(path, color, size)` writes one such image; `SHARED` is `../shared` (real data, may be absent).
`catdog(*args)` runs the CLI in-process; `error_line`, `ok_json` read its result; `out_of_memory()` is the error
torch raises when the GPU is full. `printed(renderable, width)` and `logged(renderable)` are what a terminal of that
width, and catdog's own console off a terminal (a log), show of something rich renders.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import random
import socket
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from click.testing import Result
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from catdog_cli.cli import progress
from catdog_cli.cli.app import app
from catdog_cli.core.events import Events

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


def make_photo(path: Path, seed: int, tint: Sequence[int] = (128, 128, 128), size: tuple[int, int] = (96, 72)) -> Path:
    """A photo-like image: smooth random shapes (a seeded 6x6 field, upsampled) around a color `tint`, so that two
    seeds look unrelated while a resized or re-encoded copy still looks the same; format from the suffix."""
    import numpy as np

    field = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    im = Image.fromarray(field).resize(size, Image.Resampling.BICUBIC)
    im = Image.blend(im, Image.new("RGB", size, tuple(tint)), 0.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def write_class(folder: Path, class_index: int, count: int, offset: int) -> None:
    color = CLASS_COLORS[class_index % len(CLASS_COLORS)]
    for i in range(count):
        n = offset + i
        suffix = ".png" if n % 2 == 0 else ".jpg"
        make_image(folder / f"img{n:03d}{suffix}", color, SIZES[n % len(SIZES)], shade=(n % 5) * 6 - 12)


# --- the CLI in-process -------------------------------------------------------------------------------------

TINY_CLI = ("--backbone", "squeezenet1_1", "--weights", "none", "--image-size", "32", "--device", "cpu")


def catdog(*args: object) -> Result:
    """The CLI in-process, on a wide console (one line per message); it must end at the error boundary."""
    result = CliRunner(env={"COLUMNS": "1000"}).invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def error_line(result: Result) -> str:
    """A refused command: exit code 1, and its message is the last line of stderr."""
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: "), result.stderr
    return line


def ok_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def labeled_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 8) -> Path:
    """root/<class>/imgN.png, one color per class (catdog splits it into train and val)."""
    for k, name in enumerate(classes):
        for i in range(per_class):
            make_image(root / name / f"img{i}.png", CLASS_COLORS[k], (40 + i, 36), shade=i * 4)
    return root


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file's size and mtime: equal snapshots mean nothing was written."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def out_of_memory() -> torch.cuda.OutOfMemoryError:
    """What torch raises when the GPU is full (no GPU here: tests raise it where the model would)."""
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


# --- a trained model for the tests that use one ---------------------------------------------------------------

TINY = {"backbone": "resnet18", "image_size": 32, "batch_size": 4, "device": "cpu", "workers": 1}  # TrainConfig


class Recorder(Events):
    """Keeps what the engine said: notes, epoch records, compare cells."""

    def __init__(self):
        self.notes, self.epochs, self.cells = [], [], []

    def note(self, text):
        self.notes.append(text)

    def epoch(self, record):
        self.epochs.append(record)

    def cell(self, index, total, name):
        self.cells.append(name)


# --- folders full of links, for the walking rules that fetch and training share ------------------------------


@dataclass
class LinkedTree:
    """A dataset folder `top` (class folders a/, b/, c/) with links, FIFOs and devices in random places.

    `real` maps each class to the images that really live in it (no link on the way), `outside` lists the
    images in a folder beside `top`, which links may lead to. Every image has its own bytes."""

    top: Path
    real: dict[str, list[Path]]
    outside: list[Path]
    hazards: list[str]  # what was planted, for failure messages


def linked_tree(root: Path, seed: int) -> LinkedTree:
    rng = random.Random(seed)
    top, outside_dir = root / "data", root / "outside"
    counter = itertools.count()

    def image(path: Path) -> Path:
        n = next(counter)  # a width per image: no two images have the same bytes
        return make_image(path, CLASS_COLORS[n % len(CLASS_COLORS)], (24 + n, 20))

    real = {
        c: [image(top / c / f"{i}.png") for i in range(rng.randint(2, 3))]
        + [image(top / c / "sub" / f"s{i}.png") for i in range(rng.randint(1, 2))]
        for c in ("a", "b", "c")
    }
    outside = [image(outside_dir / f"o{k}" / f"{i}.png") for k in range(2) for i in range(2)]
    folders = [top, *(top / c for c in real), *(top / c / "sub" for c in real)]
    targets = [root, top, *folders[1:], outside_dir, outside_dir / "o0", outside_dir / "o1"]
    images = [p for ps in real.values() for p in ps] + outside
    hazards = []
    for k in range(rng.randint(4, 9)):
        where, kind = rng.choice(folders), rng.choice(["dir", "dir", "file", "broken", "loop", "fifo", "device"])
        if kind == "dir":
            target = rng.choice([*targets, where])
            link = where / f"link{k}"
            link.symlink_to(os.path.relpath(target, where), target_is_directory=True)
        elif kind == "file":
            target = rng.choice(images)
            link = where / f"link{k}.png"
            link.symlink_to(os.path.relpath(target, where))
        elif kind == "broken":
            target, link = where / "missing.png", where / f"broken{k}.jpg"
            link.symlink_to("missing.png")
        elif kind == "loop":
            target, link = where / f"loop{k}.jpg", where / f"loop{k}.jpg"
            link.symlink_to(link.name)
        elif kind == "fifo" and hasattr(os, "mkfifo"):
            target, link = where / f"pipe{k}.jpg", where / f"pipe{k}.jpg"
            os.mkfifo(link)
        else:  # a device named like an image: reading /dev/zero never ends (a broken link where there is none)
            target, link = Path("/dev/zero"), where / f"device{k}.jpg"
            link.symlink_to(target)
        hazards.append(f"{kind}: {link.relative_to(root)} -> {target}")
    return LinkedTree(top, real, outside, hazards)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height pixels: a few bytes on disk, gigabytes if decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def special_file(kind: str, tmp_path: Path) -> str:
    """A FIFO, a socket or a device named like an image: what a regular-file check must refuse."""
    if kind == "fifo":
        path = tmp_path / "pipe.jpg"
        os.mkfifo(path)
        return str(path)
    if kind == "socket":
        path = tmp_path / "sock.jpg"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return str(path)
    return {"char device": "/dev/zero", "null device": "/dev/null"}[kind]


def printed(renderable: object, width: int) -> list[str]:
    """What a terminal `width` columns wide shows of `renderable`, line by line, without colors."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


def logged(renderable: object) -> list[str]:
    """What catdog's own console prints of `renderable` off a terminal (a log, a pipe), line by line."""
    console = progress.console()
    console.file = io.StringIO()
    console.print(renderable)
    return console.file.getvalue().splitlines()
