"""What a folder of labeled images looks like, for `fetch` and for training alike (torch-free).

One set of rules: which files are images, which names are noise, which folder names mean a split, how a
tree is walked (`Walk`: links followed once, loops cut, each file taken once, only regular files read), and how a
class is split into train and val the same way every time.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

from catdog_cli.core.formatting import natural_key
from catdog_cli.errors import CatdogError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})  # compared lower-cased; dot files too
NOT_REGULAR = "not a regular file"  # a walk's reason for a FIFO, device or socket
SPECIAL_FILE = "not a regular file (a FIFO, device or socket is never read)"  # the decoder's, for one named as an image
CANNOT_READ = "cannot read"  # a walk's reason for a folder it could not list

# Folder names that mean a split, lower-cased. Kaggle's test1/ has no labels, so it is "unlabeled".
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
    "test1": "unlabeled",
    "unlabeled": "unlabeled",
    "unlabelled": "unlabeled",
    "predict": "unlabeled",
}


def ignored(name: str) -> bool:
    """Hidden files, OS litter and macOS resource forks: never data, never worth a note."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def is_image_name(path: Path | str) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def split_of(folder: Path) -> str | None:
    """'train', 'val', 'test' or 'unlabeled' for a split folder's name, None for any other folder."""
    return SPLIT_FOLDERS.get(folder.name.lower())


def visible_dirs(folder: Path) -> list[Path]:
    """Sub-folders, sorted, without hidden ones, OS litter and links that loop back (`train/again -> .`)."""
    return Walk(folder).listing(folder)[0]


def _under(path: str, folder: str) -> bool:
    """path is folder or inside it (both real, absolute)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


class Walk:
    """One dataset's walk, by one set of rules for every folder it reads:

    - only regular files are offered: a FIFO, device or socket named like an image is "other" (reading one hangs);
      a broken or looping link is offered, so that decoding names its fault;
    - a link to a folder is followed (a class kept on another disk), unless it leads back to the dataset's top
      folder, above it, or to a folder it is itself inside (a loop); each real folder is walked once through
      links, and not through a link at all when it is walked where it really is;
    - a file reached twice (a link to it, a hard link, a folder linked twice) is taken once: where it really is
      when the walk reaches it there, else at the first link to it. So a link from one class (or split) into
      another never gives an image a second label.

    Files are collected per folder by `images`; `duplicates` is decided over everything walked so far, so a
    dataset read class by class shares one Walk.
    """

    def __init__(self, top: Path) -> None:
        self.top = Path(top)
        self._top_real = os.path.realpath(top)
        self._walked: dict[str, Path] = {}  # real folder -> where it was first walked
        self._direct: set[str] = set()  # real folders walked where they really are
        self._files: dict[tuple[int, int], list[tuple[Path, bool]]] = {}  # (device, inode) -> [(path, direct)]
        self.cut: list[tuple[Path, str]] = []  # folders not walked, and why

    def listing(self, folder: Path) -> tuple[list[Path], list[Path]]:
        """(sub-folders, files) of one folder, sorted, without hidden files and OS litter; links that loop back
        are neither. Raises OSError when the folder cannot be read."""
        dirs, files = [], []
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not ignored(e.name)), key=lambda e: e.name)
        for e in entries:
            path = Path(folder) / e.name
            if not _is_dir(e):
                files.append(path)
            elif not (e.is_symlink() and self._loop(path)):
                dirs.append(path)
        return dirs, files

    def images(self, folder: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
        """(image files, [(other file, why)]) under folder, recursively, in walk order (each folder's files
        sorted, then its sub-folders in sorted order). Files reached twice are still in: see `duplicates`."""
        images: list[Path] = []
        others: list[tuple[Path, str]] = []
        stack = [(Path(folder), self._reached_directly(Path(folder)))]
        while stack:
            path, direct = stack.pop()
            if not self._enter(path, direct):
                continue
            try:
                dirs, files = self.listing(path)
            except OSError as e:
                self.cut.append((path, f"{CANNOT_READ} ({e.strerror or e})"))
                continue
            for file in files:
                self._file(file, direct, images, others)
            stack += [(d, direct and not d.is_symlink()) for d in reversed(dirs)]
        return images, others

    def duplicates(self) -> dict[Path, Path]:
        """{path: the path the same file is taken at} for every file reached more than once."""
        dropped = {}
        for reached in self._files.values():
            if len(reached) > 1:
                keep = next((p for p, direct in reached if direct), reached[0][0])
                dropped |= {p: keep for p, _ in reached if p != keep}
        return dropped

    def _reached_directly(self, folder: Path) -> bool:
        """No link on the way from the top folder down to this one."""
        try:
            rel = os.path.relpath(folder, self.top)
        except ValueError:  # another drive (Windows)
            return True
        return rel.startswith("..") or os.path.realpath(folder) == os.path.normpath(os.path.join(self._top_real, rel))

    def _loop(self, link: Path) -> bool:
        """A link back to the top folder or above it, or to a folder it is itself inside."""
        real = os.path.realpath(link)
        return _under(self._top_real, real) or _under(os.path.realpath(link.parent), real)

    def _enter(self, path: Path, direct: bool) -> bool:
        """Walk this folder now? Records why not."""
        real = os.path.realpath(path)
        if direct:
            if real in self._direct:  # a bind mount looping back
                return False
            self._direct.add(real)
            self._walked.setdefault(real, path)
            return True
        if path.is_symlink() and self._loop(path):
            self.cut.append((path, "link back to a folder above it (a loop), not followed"))
            return False
        if real in self._walked:
            self.cut.append((path, f"same folder as {os.path.relpath(self._walked[real], self.top)}/, walked once"))
            return False
        self._walked[real] = path
        return True

    def _file(self, path: Path, direct: bool, images: list[Path], others: list[tuple[Path, str]]) -> None:
        st = _stat(path)  # a broken or looping link: the link itself, and an "image" is offered, so that
        if st is not None:  # decoding names its fault
            self._files.setdefault((st.st_dev, st.st_ino), []).append((path, direct and not path.is_symlink()))
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            others.append((path, NOT_REGULAR))
        elif is_image_name(path):
            images.append(path)
        else:
            others.append((path, "not an image"))


def _stat(path: Path) -> os.stat_result | None:
    """What path is, through links; the link itself when it leads nowhere; None when it is gone."""
    try:
        return os.stat(path)
    except OSError:
        try:
            return os.lstat(path)
        except OSError:
            return None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def walk_images(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under `folder`, by the rules of `Walk`, each file once."""
    walk = Walk(folder)
    images, others = walk.images(folder)
    dropped = walk.duplicates()
    return [p for p in images if p not in dropped], [p for p, _ in others if p not in dropped]


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


def gather_images(paths: list[Path | str]) -> tuple[list[Path], dict[Path, str]]:
    """Files as given and the image files of folders (recursed, in natural order: 2.jpg before 10.jpg), and among
    them what a folder holds but is never read, with why: a file named like an image that is not a regular file (a
    FIFO), a sub-folder that cannot be read. Nothing in a folder is left out without a word (a link that loops back,
    or a folder reached twice, leaves no image out)."""
    listed: list[Path] = []
    unread: dict[Path, str] = {}
    for p in map(Path, paths):
        if p.is_dir():
            walk = Walk(p)
            images, others = walk.images(p)
            dropped = walk.duplicates()
            special = [f for f, why in others if why == NOT_REGULAR and is_image_name(f)]
            here = {f: SPECIAL_FILE for f in special if f not in dropped}  # a FIFO reached twice: one row
            here |= {d: why for d, why in walk.cut if why.startswith(CANNOT_READ)}
            listed += sorted([*(f for f in images if f not in dropped), *here], key=lambda f: natural_key(str(f)))
            unread |= here
        elif p.exists():
            listed.append(p)
        else:
            raise CatdogError(f"no such file or folder: {p}")
    return listed, unread


def collect_images(paths: list[Path | str]) -> list[Path]:
    """Files as given; folders recursed for image files, in natural order (2.jpg before 10.jpg)."""
    listed, unread = gather_images(paths)
    return [p for p in listed if p not in unread]
