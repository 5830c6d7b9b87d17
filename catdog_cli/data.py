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

import hashlib
import os
import random
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import torch
from PIL import Image, ImageOps

from catdog_cli.errors import CatdogError
from catdog_cli.folders import Walk, split_of, stratified_split, visible_dirs
from catdog_cli.paths import resolve_data

LABELED_SPLITS = ("train", "val", "test")
MAX_PIXELS = 100_000_000  # larger images are refused before decoding (decompression bombs)
MAX_RATIO = 100  # longer than 100:1 is no photo (a needle, 1 x 1,000,000 px): refused before decoding
MAX_ASPECT = 2.0  # train images longer than 2:1 keep their central 2:1 part
FULL_RESIZE = 4  # resize a whole image only when that is at most 4x the part kept; else resize only that part


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
    left_out: list[tuple[Path, str]] = field(default_factory=list)  # files outside a run's recorded split, and why
    missing: list[str] = field(default_factory=list)  # files of a run's recorded split that are gone

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


def _read_splits(root: Path, folders: dict[str, Path], notes: list[str]) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: images}} of each split folder's class folders, read with one `Walk` of the dataset: a file
    reached from two class or split folders (a link from train/cat to ../dog or ../../val/cat) is taken once,
    where it really is, so it never gets a second label or counts in train and val."""
    walk = Walk(root)
    read = {split: _class_images(folder, walk, notes) for split, folder in folders.items()}
    dropped = walk.duplicates()
    if dropped:
        notes.append(f"{len(dropped)} file(s) reached twice (through links) taken once, where they really are")
    found: dict[str, dict[str, list[Path]]] = {}
    for split, by_class in read.items():
        found[split] = {}
        for d, images in by_class.items():
            if kept := [p for p in images if p not in dropped]:
                found[split][d.name] = kept
            else:
                notes.append(f"{d}: no images, class left out")
    return found


def _class_images(folder: Path, walk: Walk, notes: list[str]) -> dict[Path, list[Path]]:
    found = {}
    for d in visible_dirs(folder):
        try:
            with os.scandir(d):  # os.walk would pass over an unreadable folder without a word
                pass
        except OSError as exc:
            notes.append(f"{d}: cannot read it ({exc.strerror or exc}), class left out")
            continue
        images, others = walk.images(d)
        if others:
            notes.append(f"{d}: ignored {len(others)} non-image file(s)")
        found[d] = images
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
        found = _read_splits(root, {s: d for s in LABELED_SPLITS if (d := _find_split_dir(root, s))}, notes)
        if "val" in found or val_split is None:
            return found, "folders", train_dir
        found["train"], found["val"] = stratified_split(found["train"], val_split, seed)
        return found, f"random {val_split:.0%} of train (seed {seed})", train_dir
    by_class = _read_splits(root, {"all": root}, notes)["all"]
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
                 classes: list[str] | None = None, recorded: dict[str, Any] | None = None) -> Dataset:
    """Discover the layout. `val_split=None` keeps a folder without split folders whole (as "all").

    `classes` fixes the class list (a trained model's); otherwise it is the train split's class folders.
    `recorded`: the split a run trained on (`split_record`); train and val are then that split, among the files
    there now (see `_restore`), not a split derived again from a file list that may have changed.
    """
    root = resolve_data(data)
    notes: list[str] = []
    try:
        found, origin, class_root = _discover(root, val_split, seed, notes)
    except OSError as exc:  # a split folder that cannot be listed
        raise CatdogError(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from None
    left_out: list[tuple[Path, str]] = []
    missing: list[str] = []
    if recorded is not None and "train" in found:
        left_out, missing = _restore(found, recorded, root, origin == "folders")
        notes += _restore_notes(left_out, missing)
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
    return Dataset(root, list(classes), splits, origin, notes, left_out, missing)


def no_val_reason(dataset: Dataset) -> str:
    """Why a run has nothing to validate on, and what will work."""
    if dataset.origin == "folders":
        val_dir = _find_split_dir(dataset.root, "val") or dataset.root / "val"
        return (f"no usable validation images in {val_dir}: put images in {val_dir}/<class>/, or remove that "
                "folder and catdog splits train into train and val (--val-split)")
    return (f"no usable validation images in {dataset.root}: use a --val-split above 0 (each class needs at least "
            "2 images), or add a val/<class>/ folder")


# --- the split a run used -------------------------------------------------------------------------------


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def split_record(dataset: Dataset) -> dict[str, Any]:
    """The files a run trained and validated on, relative to the data root and in split order: checkpoints keep
    it, so that evaluate and resume use this split, whatever was added, removed or moved since."""
    return {"origin": dataset.origin, **{name: [_relative(p, dataset.root) for p in dataset.splits[name].paths]
                                         for name in ("train", "val") if name in dataset.splits}}


def split_summary(record: dict[str, Any]) -> dict[str, Any]:
    """run.json's account of the split: the val files themselves, and the train files by count and digest."""
    train = record.get("train", [])
    digest = hashlib.sha256("\n".join(sorted(train)).encode("utf-8", "surrogatepass")).hexdigest()
    return {"origin": record["origin"], "val": record.get("val", []),
            "train": {"count": len(train), "sha256": digest}}


ADDED = "added since the run trained (not in its recorded split), left out"
LIKE_TRAINING = "named like one of the run's training images (moved or copied from train?), left out of val"


def _restore(found: dict[str, dict[str, list[Path]]], recorded: dict[str, Any], root: Path,
             val_folder: bool) -> tuple[list[tuple[Path, str]], list[str]]:
    """Set found's train and val to the recorded split, in its order, among the files there now.

    A file recorded in train or val stays there. A file the run never saw is left out (it is neither the run's
    training data nor its val data), except a file added to a val/ folder: the user put it in val, so it counts,
    unless it bears the name of one of the run's training images (moved or copied from train/ since: a training
    image never counts as val). Returns (left out, with why) and the recorded files that are gone.
    """
    here = {_relative(p, root): (cls, p) for split in ("train", "val") for cls, paths in found.get(split, {}).items()
            for p in paths}
    trained = {PurePosixPath(r).name for r in recorded.get("train", [])}
    restored: dict[str, dict[str, list[Path]]] = {"train": {}, "val": {}}
    for split in ("train", "val"):
        for rel in recorded.get(split, []):
            if rel in here:
                cls, path = here[rel]
                restored[split].setdefault(cls, []).append(path)
    known = set(recorded.get("train", [])) | set(recorded.get("val", []))
    added_to_val = {p for paths in found.get("val", {}).values() for p in paths} if val_folder else set()
    left_out = []
    for rel, (cls, path) in here.items():
        if rel in known:
            continue
        if path not in added_to_val:
            left_out.append((path, ADDED))
        elif path.name in trained:
            left_out.append((path, LIKE_TRAINING))
        else:
            restored["val"].setdefault(cls, []).append(path)
    found["train"], found["val"] = restored["train"], restored["val"]
    return left_out, sorted(known - set(here))


def _restore_notes(left_out: list[tuple[Path, str]], missing: list[str], shown: int = 5) -> list[str]:
    notes = []
    for reason in sorted({why for _, why in left_out}):
        paths = sorted(str(p) for p, why in left_out if why == reason)
        more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
        notes.append(f"{len(paths)} file(s) {reason}: {', '.join(paths[:shown])}{more}")
    if missing:
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        notes.append(f"{len(missing)} file(s) of the run's recorded split are gone: {', '.join(missing[:shown])}{more}")
    return notes


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


def _open_regular(path: Path) -> BinaryIO:
    """The file opened for reading if it is a regular file: a FIFO named like an image would hang a read forever,
    a device would never end. Checked before opening, and again on what was opened (without blocking)."""
    special = ImageError("not a regular file (a FIFO, device or socket is never read)")
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


def _check_size(width: int, height: int) -> None:
    """Refuse, from the header, what decoding or resizing would need far too much memory for."""
    if width * height > MAX_PIXELS:
        raise ImageError(f"{width}x{height} pixels is over the {MAX_PIXELS:,} pixel limit")
    if max(width, height) > MAX_RATIO * max(1, min(width, height)):
        raise ImageError(f"{width}x{height} pixels is longer than {MAX_RATIO}:1; not a photo")


def open_rgb(path: Path, short_side: int | None = None) -> Image.Image:
    """RGB image, EXIF-rotated; JPEGs are decoded at the smallest DCT scale that still covers `short_side`."""
    try:
        with _open_regular(path) as f, Image.open(f) as im:
            _check_size(im.width, im.height)
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


def _resized_center(im: Image.Image, short: int, box: tuple[int, int],
                    offset: Callable[[int], int]) -> Image.Image:
    """Resize(short), then the central part of it at most `box` (w, h) large, `offset(extra)` pixels in from the
    left or top: what a resize of the whole image then a crop gives. Memory stays about the size of the part kept:
    when the whole resized image would be far larger (a 100:1 strip), only the source region behind it is resized."""
    w, h = resized_size(im.width, im.height, short)
    kept_w, kept_h = min(box[0], w), min(box[1], h)
    left, top = offset(w - kept_w), offset(h - kept_h)
    if w * h <= FULL_RESIZE * kept_w * kept_h:  # the classic way, exactly
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
    """uint8 (3, crop, crop): Resize(resize) then CenterCrop(crop), the classic eval transform."""
    im = _resized_center(open_rgb(path, resize), resize, (crop, crop), lambda extra: int(round(extra / 2.0)))
    if im.size != (crop, crop):  # smaller than the crop (crop > resize): padded, as CenterCrop pads
        im = im.crop((-((crop - im.width) // 2), -((crop - im.height) // 2), crop - (crop - im.width) // 2,
                      crop - (crop - im.height) // 2))
    return _pil_to_tensor(im).contiguous()


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
