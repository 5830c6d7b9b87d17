"""From a file to pixels: images opened safely (format, size, bombs), resized, batched as uint8 tensors.

Decoding happens once per process: every image is opened as RGB (any mode, EXIF orientation applied),
resized so its short side is the eval resize, and kept as uint8. Train images keep their whole field of view
(RandomResizedCrop then runs on the device, see augment.py); eval images are stored already center-cropped,
exactly the classic Resize + CenterCrop (transparency composited on white first): the contract that an exported
file's metadata and the README's snippet spell out step by step.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch
from PIL import Image, ImageOps

from catdog_cli.data.dataset import Split
from catdog_cli.data.folders import SPECIAL_FILE

MAX_PIXELS = 100_000_000  # larger images are refused before decoding (decompression bombs)
MAX_RATIO = 100  # longer than 100:1 is no photo (a needle, 1 x 1,000,000 px): refused before decoding
MAX_ASPECT = 2.0  # train images longer than 2:1 keep their central 2:1 part
FULL_RESIZE = 4  # train: resize a whole image only when that is at most 4x the part kept; else only that part


# --- decoding ----------------------------------------------------------------------------------------


class ImageError(Exception):
    """An image that cannot be used; the message says why in a few words."""


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit / float grayscale: scale to 8 bits
        lo, hi = im.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = im.convert("F").point(lambda v: (v - lo) * scale).convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _open_regular(path: Path) -> BinaryIO:
    """The file opened for reading if it is a regular file: a FIFO named like an image would hang a read forever,
    a device would never end. Checked before opening, and again on what was opened (without blocking)."""
    special = ImageError(SPECIAL_FILE)
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise special
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else in between
            raise special
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_size(width: int, height: int) -> None:
    """Refuse, from the header, what decoding or resizing would need far too much memory for."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{width}x{height} pixels is over the {MAX_PIXELS:,} pixel limit")
    if max(width, height) > MAX_RATIO * max(1, min(width, height)):
        raise ImageError(f"{width}x{height} pixels is longer than {MAX_RATIO}:1; not a photo")


def open_rgb(path: Path, short_side: int | None = None) -> Image.Image:
    """RGB image, EXIF-rotated; JPEGs are decoded at the smallest DCT scale that still covers `short_side`."""
    try:
        with _open_regular(path) as f, Image.open(f) as im:
            check_size(im.width, im.height)
            if short_side and im.format == "JPEG":
                im.draft("RGB", (short_side, short_side))
            im = ImageOps.exif_transpose(im)
            return to_rgb(im)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"over the {MAX_PIXELS:,} pixel limit") from None
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise ImageError(_unreadable(path, exc)) from None


def _unreadable(path: Path, exc: Exception) -> str:
    """Why a file could not be decoded, in a few words (the path is printed next to it)."""
    if path.is_file() and path.stat().st_size == 0:
        return "empty file"
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image, or a format Pillow cannot read"
    if "truncated" in str(exc).lower():  # Pillow says it two ways, depending on where the data ends
        return "truncated file"
    if isinstance(exc, OSError) and exc.strerror:  # the file system's reason: a symlink loop, no permission
        return exc.strerror
    return str(exc).split("\n")[0] or type(exc).__name__


def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """(w, h) with the short side `short`, as torchvision's Resize(int) computes it."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def _resized_center(
    im: Image.Image, short: int, box: tuple[int, int], offset: Callable[[int], int], whole: bool = False
) -> Image.Image:
    """Resize(short), then the central part of it at most `box` (w, h) large, `offset(extra)` pixels in from the
    left or top: what a resize of the whole image then a crop gives. Unless `whole`, memory stays about the size of
    the part kept: when the whole resized image would be far larger (a 100:1 strip), only the source region behind
    it is resized, which equals the classic way only to 1 grey level (Pillow's float box arithmetic)."""
    w, h = resized_size(im.width, im.height, short)
    kept_w, kept_h = min(box[0], w), min(box[1], h)
    left, top = offset(w - kept_w), offset(h - kept_h)
    if whole or w * h <= FULL_RESIZE * kept_w * kept_h:  # the classic way, exactly
        resized = im.resize((w, h), Image.Resampling.BILINEAR)
        return resized if (kept_w, kept_h) == (w, h) else resized.crop((left, top, left + kept_w, top + kept_h))
    sx, sy = im.width / w, im.height / h
    region = (left * sx, top * sy, (left + kept_w) * sx, (top + kept_h) * sy)
    return im.resize((kept_w, kept_h), Image.Resampling.BILINEAR, box=region)


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3).permute(2, 0, 1)


def load_train_image(path: Path, resize: int) -> tuple[torch.Tensor, bool]:
    """uint8 (3, resize, w) with resize <= w <= MAX_ASPECT * resize, and whether it was stored transposed.

    Portraits are stored on their side so that every train image fits one (resize, 2 * resize) canvas.
    """
    im = open_rgb(path, resize)
    longest = int(MAX_ASPECT * resize)
    t = _pil_to_tensor(_resized_center(im, resize, (longest, longest), lambda extra: extra // 2))
    portrait = t.shape[1] > t.shape[2]
    if portrait:
        t = t.transpose(1, 2)
    return t.contiguous(), portrait


def load_eval_image(path: Path, resize: int, crop: int) -> torch.Tensor:
    """uint8 (3, crop, crop): Resize(resize) then CenterCrop(crop), the classic eval transform, exactly: it is the
    contract an exported file states (contract.metadata), so the whole image is resized whatever its shape. That
    costs at most MAX_RATIO * resize**2 pixels for a 100:1 strip (6.5 M at resize 256), for one image at a time."""
    return _pil_to_tensor(eval_crop(open_rgb(path, resize), resize, crop)).contiguous()


def eval_crop(image: Image.Image, resize: int, crop: int) -> Image.Image:
    """The crop x crop eval view of an RGB image already open: Resize(resize) then CenterCrop(crop), as above."""
    im = _resized_center(image, resize, (crop, crop), lambda extra: int(round(extra / 2.0)), True)
    if im.size != (crop, crop):  # smaller than the crop (crop > resize): padded, as CenterCrop pads
        im = im.crop(
            (
                -((crop - im.width) // 2),
                -((crop - im.height) // 2),
                crop - (crop - im.width) // 2,
                crop - (crop - im.height) // 2,
            )
        )
    return im


@dataclass
class ImageBatch:
    """What every batch source yields. Train batches carry each image's valid size in its padded canvas."""

    images: torch.Tensor  # uint8 (B, 3, H, W)
    labels: torch.Tensor  # int64 (B,)
    index: torch.Tensor  # int64 (B,), position in the split, for naming images in reports
    sizes: torch.Tensor | None = None  # int64 (B, 2): valid (h, w) of train images
    transposed: torch.Tensor | None = None  # bool (B,): portrait train images stored on their side

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> ImageBatch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return ImageBatch(*(move(t) for t in self._tensors()))

    def pin_memory(self) -> ImageBatch:
        """Page-locked copies: the DataLoader calls this (pin_memory=True) on what a worker made, and only from
        pinned memory is `to(device, non_blocking=True)` a copy that overlaps the GPU's work."""
        return ImageBatch(*(None if t is None else t.pin_memory() for t in self._tensors()))

    def _tensors(self) -> tuple[torch.Tensor | None, ...]:
        return self.images, self.labels, self.index, self.sizes, self.transposed

    def select(self, idx: torch.Tensor) -> ImageBatch:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        return ImageBatch(*(pick(t) for t in self._tensors()))


@dataclass
class Decoded:
    """One decoded image: the tensor, its label, its position in the split, and if stored transposed."""

    image: torch.Tensor
    label: int
    index: int
    transposed: bool = False


def collate(items: list[Decoded], train: bool) -> ImageBatch:
    """Stack decoded images; train images of different widths are zero-padded to one canvas."""
    labels = torch.tensor([d.label for d in items], dtype=torch.int64)
    index = torch.tensor([d.index for d in items], dtype=torch.int64)
    if not train:
        return ImageBatch(torch.stack([d.image for d in items]), labels, index)
    height = max(d.image.shape[1] for d in items)
    width = max(d.image.shape[2] for d in items)
    canvas = torch.zeros(len(items), 3, height, width, dtype=torch.uint8)
    for c, d in zip(canvas, items):
        h, w = d.image.shape[1:]
        c[:, :h, :w] = d.image
        # repeat the last column and row into the padding: roi_align's bilinear samples next to a crop's right or
        # bottom edge reach one pixel beyond it, and must see the image's edge there (as a resize does), not black
        c[:, :h, w : w + 1] = d.image[:, :, -1:]
        c[:, h : h + 1, : w + 1] = c[:, h - 1 : h, : w + 1]
    sizes = torch.tensor([d.image.shape[1:] for d in items], dtype=torch.int64)
    transposed = torch.tensor([d.transposed for d in items], dtype=torch.bool)
    return ImageBatch(canvas, labels, index, sizes, transposed)


@dataclass(frozen=True)
class ImageSpec:
    """How a split's images are decoded: train keeps the whole view at short side `resize`, eval crops."""

    train: bool
    resize: int
    crop: int

    def decode(self, split: Split, i: int) -> Decoded:
        if self.train:
            image, transposed = load_train_image(split.paths[i], self.resize)
            return Decoded(image, split.labels[i], i, transposed)
        return Decoded(load_eval_image(split.paths[i], self.resize, self.crop), split.labels[i], i)

    def bytes_per_image(self) -> int:
        """Upper bound of the decoded size, for deciding whether a split fits the memory budget."""
        return 3 * self.resize * int(MAX_ASPECT * self.resize) if self.train else 3 * self.crop * self.crop


def decode_split(
    split: Split, spec: ImageSpec, workers: int, on_image: Callable[[], None] | None = None
) -> tuple[ImageBatch | None, list[tuple[Path, str]]]:
    """Decode a whole split in threads (PIL releases the GIL) into one batch; undecodable files are skipped."""

    def decode(i: int) -> Decoded | ImageError:
        try:
            return spec.decode(split, i)
        except ImageError as exc:
            return exc
        finally:
            if on_image:
                on_image()

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(decode, range(len(split))))
    skipped = [(split.paths[i], str(r)) for i, r in enumerate(results) if isinstance(r, ImageError)]
    items = [r for r in results if isinstance(r, Decoded)]
    return (collate(items, spec.train) if items else None), skipped


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
