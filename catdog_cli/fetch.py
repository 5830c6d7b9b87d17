"""`catdog fetch`: named datasets (and pretrained weights), downloaded, verified and laid out for training.

Every dataset ends up as ROOT/NAME/{train,val[,test]}/<class>/* plus ROOT/NAME/unlabeled/* when the source
has unlabeled images. It is built in a temporary folder beside ROOT/NAME, marker file included, and renamed
into place in one step: a folder with the marker is complete, so a rerun is a no-op, and an interrupted
fetch never leaves anything that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image

from catdog_cli.archives import FetchProgress, download, extract, sha256_file
from catdog_cli.errors import CatdogError
from catdog_cli.folders import ignored, is_image_name, split_of, stratified_split, walk_images
from catdog_cli.paths import copy_new, data_root, publish_new

__all__ = ["REGISTRY", "DatasetSummary", "FetchProgress", "fetch", "fetch_weights"]

MARKER = ".catdog-dataset.json"
VAL_FRACTION = 0.2  # of each class, when the source has no val split (the same files give the same val set)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
SPLIT_ORDER = ("train", "val", "test", "unlabeled")
KAGGLE_NAME = re.compile(r"([A-Za-z]+)\.\d+\.\w+")  # cat.123.jpg: the label is in the file name
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Source:
    """A registry entry: where a dataset's archive lives, what it must be, and how to name its classes."""

    url: str
    size: int | None  # bytes
    sha256: str | None  # None where it could not be established: size and layout are checked instead
    classes: dict[str, str] = field(default_factory=dict)  # source folder name -> catdog class name
    decode: bool = False  # decode every image: for sources known to hold truncated files


REGISTRY: dict[str, Source] = {
    "hymenoptera": Source(
        url="https://download.pytorch.org/tutorial/hymenoptera_data.zip",
        size=47_286_322,
        # The checksum pytorch/tutorials verifies this archive against (.jenkins/download_data.py).
        sha256="fbc41b31d544714d18dd1230b1e2b455e1557766e13e67f9f5a7a23af7c02209",
    ),
    "catdog": Source(  # Google's 3,000-image cut of Kaggle Dogs vs. Cats: train/ and validation/
        url="https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip",
        size=68_606_236,  # Content-Length the server reports; the sha256 could not be established offline
        sha256=None,
        classes={"cats": "cat", "dogs": "dog"},
    ),
    "petimages": Source(  # Microsoft's full Kaggle Cats and Dogs set (PetImages/{Cat,Dog}), 787 MB
        url="https://download.microsoft.com/download/3/E/1/3E1C3F21-ECDB-4869-8368-6DEBA77B919F/"
        "kagglecatsanddogs_5340.zip",
        size=824_887_076,  # Content-Length the server reports; the sha256 could not be established offline
        sha256=None,
        classes={"Cat": "cat", "Dog": "dog"},
        decode=True,  # it holds zero-byte and truncated JPEGs
    ),
}


@dataclass
class DatasetSummary:
    """What a fetch produced; also stored as the dataset's completion marker."""

    name: str
    path: Path
    classes: list[str]
    splits: dict[str, int]  # images per split: {"train": 320, "val": 78, "unlabeled": 300}
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file in the source, reason)
    cached: bool = False  # already complete: nothing was done
    source: str = ""
    sha256: str | None = None  # of the archive it came from

    def to_json(self) -> dict:
        return {"name": self.name, "path": str(self.path), "classes": self.classes, "splits": self.splits,
                "skipped": [{"file": f, "reason": r} for f, r in self.skipped], "cached": self.cached,
                "source": self.source, "sha256": self.sha256}

    @classmethod
    def from_json(cls, d: dict) -> DatasetSummary:
        return cls(name=d["name"], path=Path(d["path"]), classes=list(d["classes"]), splits=dict(d["splits"]),
                   skipped=[(s["file"], s["reason"]) for s in d["skipped"]], cached=bool(d["cached"]),
                   source=d["source"], sha256=d["sha256"])


def fetch(name: str | None, *, root: Path | None = None, source: str | None = None, sha256: str | None = None,
          force: bool = False, progress: FetchProgress | None = None) -> DatasetSummary:
    """Make ROOT/NAME a finished dataset in the standard layout and describe it.

    source (a URL, a local archive or a folder) replaces the registry URL; without a name it is required,
    and the dataset is named after it with its layout inferred. sha256 verifies whichever archive is used.
    """
    progress = progress or FetchProgress()
    if name is None:
        if source is None:
            raise CatdogError(f"name a dataset ({', '.join(REGISTRY)}) or give --from PATH_OR_URL")
        name = _name_from(source)
    if not SAFE_NAME.fullmatch(name):
        raise CatdogError(f"bad dataset name {name!r}: use letters, digits, '-' and '_'")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CatdogError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    root = Path(root).expanduser() if root is not None else data_root()
    final = root / name
    done = _read_marker(final) if final.exists() else None
    entry = REGISTRY.get(name)
    if entry is None and source is None and done is None:
        raise CatdogError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)} (or give --from PATH_OR_URL)")
    explicit = source is not None
    if source is None:  # --force redoes a fetch from where it came from (a mirror, a file on an offline machine)
        source = done.source if done is not None else entry.url
    is_url = "://" in source
    origin = source if is_url else str(Path(source).expanduser().resolve())
    from_registry = entry is not None and origin == entry.url  # the registry's checksum and size apply

    if final.exists() and not force:
        if done is None:
            raise CatdogError(f"{final} exists but is not a dataset made by catdog fetch; "
                              "move it away or pass --force to replace it")
        if explicit and done.source != origin:
            raise CatdogError(f"{name} was fetched from {done.source}; pass --force to replace it from {origin}")
        done.path, done.cached = final, True
        return done

    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{name}.*.tmp"):  # left by a fetch that was killed
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    fetched, move = None, True  # move files out of our own extraction; copy them from a user's folder
    try:
        if is_url:
            fetched = root / ".downloads" / _download_name(name, origin)
            digest = download(origin, fetched, sha256=sha256 or (entry.sha256 if from_registry else None),
                              size=entry.size if from_registry else None, progress=progress,
                              description=f"downloading {name}")
            tree = work / "raw"
            extract(fetched, tree, progress, f"extracting {name}")
        else:
            path = Path(origin)
            if not path.exists():
                raise CatdogError(f"{source}: no such file or folder")
            if path.is_dir():
                if sha256 is not None:
                    raise CatdogError("--sha256 verifies an archive or a download, not a folder")
                tree, digest, move = path, None, False
            else:
                digest = sha256_file(path)
                if sha256 is not None and digest != sha256:
                    raise CatdogError(f"checksum mismatch for {path}: expected sha256 {sha256}, got {digest}")
                tree = work / "raw"
                extract(path, tree, progress, f"extracting {name}")
        out = work / "out"
        summary = _build(tree, out, work, name, entry, move=move, progress=progress)
        summary.path, summary.source, summary.sha256 = final, origin, digest
        (out / MARKER).write_text(json.dumps(summary.to_json(), indent=1))
        if final.exists():  # --force: move the old one aside first; rename cannot replace a non-empty folder
            os.replace(final, work / "old")
        os.replace(out, final)
    except CatdogError:  # an archive that is unsafe, damaged or unreadable will not get better: drop it
        if fetched is not None:
            fetched.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if fetched is not None:  # the archive was only a means, and large (petimages: 787 MB); a fetch that was
        fetched.unlink(missing_ok=True)  # interrupted after downloading keeps it, to pick up from there
    return summary


def fetch_weights(backbones: list[str]) -> dict[str, Path]:
    """Download torchvision's ImageNet weights into the torch hub cache, so training later works offline."""
    from catdog_cli.backbones import prefetch_weights  # imports torch: only pay for it when asked

    return {b: Path(prefetch_weights(b)) for b in backbones}


def _name_from(source: str) -> str:
    """'.../catdog.zip' -> 'catdog', 'https://host/x/hymenoptera_data.tar.gz?dl=1' -> 'hymenoptera_data'."""
    base = Path(urlparse(source).path if "://" in source else source).expanduser().name
    for suffix in ARCHIVE_SUFFIXES:
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
            break
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", base).strip("-_")
    if not name:
        raise CatdogError(f"cannot name a dataset after {source!r}; give a NAME")
    return name


def _download_name(name: str, url: str) -> str:
    """Per name and URL, so a half-downloaded file is only ever resumed from the URL it came from."""
    return f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}.download"


def _read_marker(folder: Path) -> DatasetSummary | None:
    try:
        return DatasetSummary.from_json(json.loads((folder / MARKER).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- layout: recognise what the source looks like, then rebuild it as the standard layout ---------------

def _visible(folder: Path) -> list[Path]:
    """Sorted entries, without hidden files, OS litter and macOS resource forks."""
    return sorted(p for p in folder.iterdir() if not ignored(p.name))


def _find_root(tree: Path, work: Path, progress: FetchProgress) -> Path:
    """Step into wrapper folders (hymenoptera_data/, PetImages/'s parent), and unpack archives inside
    archives (Kaggle's dogs-vs-cats.zip holds train.zip and test1.zip)."""
    folder = tree
    while True:
        kids = _visible(folder)
        dirs = [p for p in kids if p.is_dir()]
        files = [p for p in kids if p.is_file()]
        inner = [p for p in files if p.name.lower().endswith(ARCHIVE_SUFFIXES)]
        if not dirs and inner and not any(map(is_image_name, files)):
            nested = work / "nested"
            for archive in inner:
                extract(archive, nested, progress)
            return _find_root(nested, work / "nested2", progress)
        if len(dirs) == 1 and split_of(dirs[0]) is None and not any(map(is_image_name, files)):
            folder = dirs[0]
            continue
        return folder


def _images(folder: Path, base: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Every image under folder, walked by the same rules as training data; other files are reported as skipped."""
    images, others = walk_images(folder)
    skipped += [(p.relative_to(base).as_posix(), "not an image") for p in others]
    return images


def _labeled(folder: Path, base: Path, skipped: list[tuple[str, str]]) -> dict[str, list[Path]] | None:
    """{class: images} from class folders or from Kaggle file names; None when the images carry no label."""
    kids = _visible(folder)
    loose = [p for p in kids if p.is_file() and is_image_name(p)]
    classes = {d.name: imgs for d in kids if d.is_dir() and (imgs := _images(d, base, skipped))}
    if classes:
        skipped += [(p.relative_to(base).as_posix(), "not in a class folder") for p in loose]
        return classes
    if loose and all(KAGGLE_NAME.fullmatch(p.name) for p in loose):
        by_label: dict[str, list[Path]] = {}
        for p in loose:
            by_label.setdefault(KAGGLE_NAME.fullmatch(p.name).group(1).lower(), []).append(p)
        return by_label
    return None


def _plan(root: Path, base: Path, skipped: list[tuple[str, str]]) -> dict[str, dict[str, list[Path]]]:
    """{split: {class: images}} ('' is the class of unlabeled images) for any of the layouts catdog reads:
    split folders (train/, val/ or validation/, test/, test1/) holding class folders or Kaggle file names,
    or class folders alone, or Kaggle file names alone."""
    dirs = [p for p in _visible(root) if p.is_dir()]
    split_dirs = [(split, d) for d in dirs if (split := split_of(d)) is not None]
    if not split_dirs:
        labeled = _labeled(root, base, skipped)
        if labeled is None:
            raise CatdogError("cannot tell the classes: expected split folders (train/, val/), class folders "
                              "(cat/, dog/) or Kaggle file names (cat.1.jpg)")
        return {"train": labeled}
    skipped += [(d.relative_to(base).as_posix() + "/", "not a split folder") for d in dirs
                if split_of(d) is None]
    plan: dict[str, dict[str, list[Path]]] = {}
    for split, d in split_dirs:
        labeled = None if split == "unlabeled" else _labeled(d, base, skipped)
        if labeled is None:  # e.g. Kaggle's test1/1.jpg
            plan.setdefault("unlabeled", {}).setdefault("", []).extend(_images(d, base, skipped))
        else:
            for cls, files in labeled.items():
                plan.setdefault(split, {}).setdefault(cls, []).extend(files)
    return plan


def _problem(path: Path, decode: bool) -> str | None:
    """Why an image is unusable, or None. Opening it catches empty and non-image files for the cost of
    a header read; decode=True decodes it all (at 1/8 scale: fast, yet it still reads every byte)."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():  # PIL warns about odd EXIF data; only errors matter here
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                if decode:
                    im.draft(None, (1, 1))
                    im.load()
                else:
                    im.verify()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return f"cannot decode ({e})"
    return None


def _place(src: Path, folder: Path, move: bool) -> None:
    """Move (or copy, from a user's folder) src into folder; a same-named file (nested source folders
    flattened into one class folder) gets -1, -2, ..., never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    if move:
        publish_new(src, folder, src.name)
    else:
        copy_new(src, folder)


def _build(tree: Path, out: Path, work: Path, name: str, entry: Source | None, *, move: bool,
           progress: FetchProgress) -> DatasetSummary:
    """Rebuild the source tree as out/{train,val,test}/<class>/* + out/unlabeled/*, leaving bad images out."""
    skipped: list[tuple[str, str]] = []
    root = _find_root(tree, work, progress)
    base = tree if root.is_relative_to(tree) else root  # `skipped` names files as they are in the archive
    plan = _plan(root, base, skipped)
    rename = entry.classes if entry else {}
    decode = entry.decode if entry else False

    files = [p for classes in plan.values() for ps in classes.values() for p in ps]
    progress.start(sum(p.stat().st_size for p in files), "checking images")
    bad = set()
    for p in files:
        if reason := _problem(p, decode):
            bad.add(p)
            skipped.append((p.relative_to(base).as_posix(), reason))
        progress.advance(p.stat().st_size)
    progress.done()
    plan = {split: {rename.get(c, c): [p for p in ps if p not in bad] for c, ps in classes.items()}
            for split, classes in plan.items()}

    if not any(plan.get("train", {}).values()):
        raise CatdogError("found no labeled training images (expected train/<class>/ folders, class folders "
                          "or Kaggle file names such as cat.1.jpg)")
    if "val" not in plan:  # e.g. Kaggle's train/ only: hold out 20 % of each class
        plan["train"], plan["val"] = stratified_split(plan["train"], VAL_FRACTION, seed=0)

    splits = {}
    for split in SPLIT_ORDER:
        if split not in plan:
            continue
        for cls, ps in plan[split].items():
            for p in ps:
                _place(p, out / split / cls if cls else out / split, move)
        splits[split] = sum(map(len, plan[split].values()))
    classes = sorted({c for s in ("train", "val", "test") for c, ps in plan.get(s, {}).items() if ps})
    return DatasetSummary(name=name, path=out, classes=classes, splits=splits, skipped=skipped)
