"""What a folder of labeled images looks like, for `fetch` and for training alike (torch-free).

One set of rules: which files are images, which names are noise, which folder names mean a split, how a
tree is walked (symlinks followed once, loops cut, only regular files read), and how a class is split into
train and val the same way every time.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # compared lower-cased; dot files too

# Folder names that mean a split, lower-cased. Kaggle's test1/ has no labels, so it is "unlabeled".
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test", "test1": "unlabeled", "unlabeled": "unlabeled",
                 "unlabelled": "unlabeled", "predict": "unlabeled"}


def ignored(name: str) -> bool:
    """Hidden files, OS litter and macOS resource forks: never data, never worth a note."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def is_image_name(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def split_of(folder: Path) -> str | None:
    """'train', 'val', 'test' or 'unlabeled' for a split folder's name, None for any other folder."""
    return SPLIT_FOLDERS.get(folder.name.lower())


def visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not ignored(p.name))


def _regular(path: Path) -> bool:
    """A regular file (through symlinks); a broken or looping link counts, so that decoding can name its fault."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return True


def walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, sorted, recursively; symlinks followed once (a loop or a folder
    linked twice is walked once). FIFOs, devices and sockets named like images are "other": reading one hangs."""
    images, others, seen = [], [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames.clear()
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not ignored(d))
        for name in sorted(filenames):
            if ignored(name):
                continue
            path = Path(dirpath) / name
            (images if is_image_name(name) and _regular(path) else others).append(path)
    return images, others


def stratified_split(by_class: dict[str, list[Path]], fraction: float, seed: int) -> tuple[dict, dict]:
    """Per class: the same shuffled order for the same files and seed, `fraction` of it to val (at least one
    image when the class has two or more, never all of them)."""
    train, val = {}, {}
    for name, paths in by_class.items():
        order = sorted(paths)
        # bytes: the same seed as the str for any UTF-8 name, and no crash on a name that is not UTF-8
        random.Random(f"{seed}:{name}".encode("utf-8", "surrogateescape")).shuffle(order)
        n_val = min(len(order) - 1, max(1, round(len(order) * fraction))) if len(order) > 1 and fraction else 0
        val[name], train[name] = order[:n_val], order[n_val:]
    return train, val
