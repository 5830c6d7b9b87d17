"""Finding labeled images in a folder, and decoding them once into uint8 tensors.

Layouts: `DIR/{train,val|valid|validation}/<class>/*` (optional `DIR/test/<class>/*`), or `DIR/<class>/*`
split stratified by `val_split` with a seed (the same split every time). `--data NAME` is a dataset that
`catdog fetch` put in the data root.

Decoding happens once per process: every image is opened as RGB (any mode, EXIF orientation applied),
resized so its short side is the eval resize, and kept as uint8. Train images keep their whole field of view
(RandomResizedCrop then runs on the device, see augment.py); eval images are stored already center-cropped,
exactly the classic Resize + CenterCrop.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, ImageOps

from catdog_cli.errors import CatdogError
from catdog_cli.folders import split_of, stratified_split, visible_dirs, walk_images
from catdog_cli.paths import data_root

LABELED_SPLITS = ("train", "val", "test")
MAX_PIXELS = 100_000_000  # larger images are refused before decoding (decompression bombs)
MAX_ASPECT = 2.0  # train images longer than 2:1 keep their central 2:1 part


@dataclass
class Split:
    paths: list[Path] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Dataset:
    root: Path
    classes: list[str]
    splits: dict[str, Split]  # "train", "val", "test", or "all" for a folder evaluated whole
    origin: str  # how val was made: "folders" or "random 20% (seed 0)"
    notes: list[str] = field(default_factory=list)  # what was left out and why, for the user

    def split(self, name: str) -> Split:
        if name == "all":
            merged = Split()
            for s in self.splits.values():
                merged.paths += s.paths
                merged.labels += s.labels
            return merged
        if name not in self.splits:
            raise CatdogError(f"{self.root} has no {name!r} split (it has: {', '.join(self.splits)})")
        return self.splits[name]


def resolve_data(data: str | Path) -> Path:
    """A folder path, or the name of a dataset fetched into the data root."""
    path = Path(data).expanduser()
    if path.is_dir():
        return path
    fetched = data_root() / str(data)
    if fetched.is_dir():
        return fetched
    if path.exists():
        raise CatdogError(f"{path} is a file, not a folder of images")
    raise CatdogError(
        f"no dataset at {data!r}: not a folder, and not fetched into {data_root()} (try `catdog fetch {data}`)"
    )


def _read_classes(folder: Path, notes: list[str]) -> dict[str, list[Path]]:
    found = {}
    for d in visible_dirs(folder):
        images, others = walk_images(d)
        if others:
            notes.append(f"{d}: ignored {len(others)} non-image file(s)")
        if images:
            found[d.name] = images
        else:
            notes.append(f"{d}: no images, class left out")
    return found


def _labeled(by_class: dict[str, list[Path]], classes: list[str]) -> Split:
    split = Split()
    for label, name in enumerate(classes):
        for p in by_class.get(name, []):
            split.paths.append(p)
            split.labels.append(label)
    return split


def shard(split: Split, rank: int, world: int, seed: int, equal: bool) -> Split:
    """This rank's part of a split under torchrun: a seeded deal of the images, disjoint across ranks.

    `equal` (for train) trims every share to the same length, so each rank takes the same number of steps.
    """
    order = list(range(len(split)))
    random.Random(seed).shuffle(order)
    if equal:
        order = order[: len(order) // world * world]
    mine = sorted(order[rank::world])
    return Split([split.paths[i] for i in mine], [split.labels[i] for i in mine])


def _find_split_dir(root: Path, split: str) -> Path | None:
    return next((d for d in visible_dirs(root) if split_of(d) == split), None)


def _discover(root: Path, val_split: float | None, seed: int,
              notes: list[str]) -> tuple[dict[str, dict[str, list[Path]]], str, Path]:
    """{split: {class: files}}, where val came from, and the folder whose class folders define the classes."""
    train_dir = _find_split_dir(root, "train")
    if train_dir is not None:
        found = {s: _read_classes(d, notes) for s in LABELED_SPLITS if (d := _find_split_dir(root, s))}
        if "val" in found or val_split is None:
            return found, "folders", train_dir
        found["train"], found["val"] = stratified_split(found["train"], val_split, seed)
        return found, f"random {val_split:.0%} of train (seed {seed})", train_dir
    by_class = _read_classes(root, notes)
    if val_split is None:
        return {"all": by_class}, "whole folder", root
    train, val = stratified_split(by_class, val_split, seed)
    return {"train": train, "val": val}, f"random {val_split:.0%} (seed {seed})", root


def _check_classes(found: dict[str, dict[str, list[Path]]], classes: list[str], reference: str, root: Path,
                   notes: list[str]) -> None:
    """Refuse reference-split classes a model cannot name; note val/test classes left out or missing."""
    for split, by_class in found.items():
        unknown = sorted(set(by_class) - set(classes))
        if unknown and split == reference:  # only with a model's classes: data it was not made for
            raise CatdogError(f"{root} has classes the model does not know: {', '.join(unknown)} "
                              f"(its classes: {', '.join(classes)})")
        if unknown:  # a val/test class absent from train can never be predicted: say so, leave it out
            notes.append(f"{split}: class folder(s) {', '.join(unknown)} not among the classes, left out")
        missing = [c for c in classes if c not in by_class]
        if missing and split != reference:
            notes.append(f"{split}: no images of {', '.join(missing)}")


def load_dataset(data: str | Path, val_split: float | None = 0.2, seed: int = 0,
                 classes: list[str] | None = None) -> Dataset:
    """Discover the layout. `val_split=None` keeps a folder without split folders whole (as "all").

    `classes` fixes the class list (a trained model's); otherwise it is the train split's class folders.
    """
    root = resolve_data(data)
    notes: list[str] = []
    found, origin, class_root = _discover(root, val_split, seed, notes)
    reference = "train" if "train" in found else "all"
    if classes is None:
        classes = sorted(found[reference])
        if len(classes) < 2:
            raise CatdogError(
                f"{class_root} has {len(classes)} class folder(s) with images; a classifier needs at least 2 "
                "(expected DIR/<class>/*.jpg or DIR/train/<class>/*.jpg)"
            )
    _check_classes(found, classes, reference, root, notes)
    splits = {s: _labeled(by_class, classes) for s, by_class in found.items()}
    if not any(len(s) for s in splits.values()):
        raise CatdogError(f"no images found in {root}")
    return Dataset(root, list(classes), splits, origin, notes)


# --- decoding ----------------------------------------------------------------------------------------


class ImageError(Exception):
    """An image that cannot be used; the message says why in a few words."""


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16-bit / float grayscale: scale to 8 bits
        lo, hi = im.getextrema()
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        im = im.convert("F").point(lambda v: (v - lo) * scale).convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: Path, short_side: int | None = None) -> Image.Image:
    """RGB image, EXIF-rotated; JPEGs are decoded at the smallest DCT scale that still covers `short_side`."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageError(f"{im.width}x{im.height} pixels is over the {MAX_PIXELS:,} pixel limit")
            if short_side and im.format == "JPEG":
                im.draft("RGB", (short_side, short_side))
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
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


def _pil_to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(im.height, im.width, 3).permute(2, 0, 1)


def load_train_image(path: Path, resize: int) -> tuple[torch.Tensor, bool]:
    """uint8 (3, resize, w) with resize <= w <= MAX_ASPECT * resize, and whether it was stored transposed.

    Portraits are stored on their side so that every train image fits one (resize, 2 * resize) canvas.
    """
    im = open_rgb(path, resize)
    w, h = resized_size(im.width, im.height, resize)
    t = _pil_to_tensor(im.resize((w, h), Image.Resampling.BILINEAR))
    if h > w:
        t = t.transpose(1, 2)
    longest = int(MAX_ASPECT * resize)
    if t.shape[2] > longest:
        left = (t.shape[2] - longest) // 2
        t = t[:, :, left : left + longest]
    return t.contiguous(), h > w


def load_eval_image(path: Path, resize: int, crop: int) -> torch.Tensor:
    """uint8 (3, crop, crop): Resize(resize) then CenterCrop(crop), the classic eval transform."""
    im = open_rgb(path, resize)
    w, h = resized_size(im.width, im.height, resize)
    im = im.resize((w, h), Image.Resampling.BILINEAR)
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return _pil_to_tensor(im.crop((left, top, left + crop, top + crop))).contiguous()


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

        return ImageBatch(*(move(t) for t in (self.images, self.labels, self.index, self.sizes, self.transposed)))

    def select(self, idx: torch.Tensor) -> ImageBatch:
        def pick(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[idx]

        return ImageBatch(*(pick(t) for t in (self.images, self.labels, self.index, self.sizes, self.transposed)))


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


def decode_split(split: Split, spec: ImageSpec, workers: int,
                 on_image: Callable[[], None] | None = None) -> tuple[ImageBatch | None, list[tuple[Path, str]]]:
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
