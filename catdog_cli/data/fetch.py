"""`catdog fetch`: named datasets (and pretrained weights), downloaded, verified and laid out for training.

Every dataset ends up as ROOT/NAME/{train,val[,test]}/<class>/* plus ROOT/NAME/unlabeled/* when the source
has unlabeled images. It is built in a temporary folder beside ROOT/NAME, its image counts checked against the
plan, marker file included, and renamed into place in one step: a folder with the marker is complete, so a
rerun is a no-op, and an interrupted fetch never leaves anything that looks finished. One fetch of a dataset
runs at a time (a lock file in ROOT); a second one waits for it, then finds the dataset complete.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import ParseResult, urlparse

from PIL import Image

from catdog_cli.core.paths import copy_new, data_root, publish_new
from catdog_cli.data.archives import (
    GIB,
    MAX_BYTES,
    MAX_SIZE_HINT,
    Budget,
    FetchProgress,
    download,
    extract,
    sha256_file,
    size_text,
)
from catdog_cli.data.folders import Walk, is_image_name, split_of, stratified_split
from catdog_cli.errors import CatdogError

try:
    import fcntl
except ImportError:  # Windows: no flock, so fetches of one dataset are not serialized there
    fcntl = None

__all__ = ["REGISTRY", "DatasetSummary", "FetchProgress", "check_options", "fetch"]

MARKER = ".catdog-dataset.json"
MARKER_MAX_BYTES = 256 << 20  # a marker lists skipped files; more than this is not one catdog wrote
VAL_FRACTION = 0.2  # of each class, when the source has no val split (the same files give the same val set)
ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip")
SPLIT_ORDER = ("train", "val", "test", "unlabeled")
KAGGLE_NAME = re.compile(r"([A-Za-z]+)\.\d+\.\w+")  # cat.123.jpg: the label is in the file name
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NESTING = 2  # archives inside archives inside the archive (Kaggle's competition zip needs 1)
MAX_SIZE_GIB = 1 << 20  # the largest --max-size taken (1 PiB): beyond it a typo, not a dataset
LOCK_WAIT_S = 1800.0  # how long a second fetch of a dataset waits for the first before it gives up
LOCK_POLL_S = 0.2


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
        return {
            "name": self.name,
            "path": str(self.path),
            "classes": self.classes,
            "splits": self.splits,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "cached": self.cached,
            "source": self.source,
            "sha256": self.sha256,
        }

    @classmethod
    def from_json(cls, d: dict) -> DatasetSummary:
        """Raises ValueError unless d has every field with its type: a marker is trusted only when whole."""
        try:
            summary = cls(
                name=d["name"],
                path=Path(d["path"]),
                classes=list(d["classes"]),
                splits=dict(d["splits"]),
                skipped=[(s["file"], s["reason"]) for s in d["skipped"]],
                cached=d["cached"],
                source=d["source"],
                sha256=d["sha256"],
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"not a dataset summary ({e})") from None
        texts = [summary.name, summary.source, *summary.classes, *summary.splits, *sum(summary.skipped, ())]
        if not (
            all(isinstance(t, str) for t in texts)
            and isinstance(summary.cached, bool)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in summary.splits.values())
            and (summary.sha256 is None or isinstance(summary.sha256, str))
        ):
            raise ValueError("not a dataset summary (a field has the wrong type)")
        return summary


def check_options(
    root: Path | str | None, sha256: str | None, max_size: float | None
) -> tuple[Path, str | None, int | None]:
    """(data root, sha256, --max-size in bytes), or a one-line error: checked before anything is touched."""
    if max_size is not None and not (
        math.isfinite(max_size) and 0 < max_size <= MAX_SIZE_GIB and int(max_size * GIB) > 0
    ):
        raise CatdogError(f"--max-size is in GiB, above 0 and at most {MAX_SIZE_GIB}; got {max_size}")
    if sha256 is not None:
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise CatdogError(f"--sha256 must be 64 hex digits, got {sha256!r}")
    root = Path(root).expanduser() if root is not None else data_root()
    if root.exists() and not root.is_dir():
        raise CatdogError(f"--root {root} is a file; it must be a folder (or a path catdog may create)")
    return root, sha256, int(max_size * GIB) if max_size is not None else None


def fetch(
    name: str | None,
    *,
    root: Path | None = None,
    source: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    max_size: float | None = None,
    progress: FetchProgress | None = None,
) -> DatasetSummary:
    """Make ROOT/NAME a finished dataset in the standard layout and describe it.

    source (a URL, a local archive or a folder) replaces the registry URL; without a name it is required,
    and the dataset is named after it with its layout inferred. sha256 verifies whichever archive is used.
    max_size (GiB) bounds what the fetch may download, unpack or copy (default: archives.MAX_BYTES, and an
    archive at most archives.MAX_RATIO times its own size). Any failure is a CatdogError, and leaves no
    dataset, no temporary folder and no download that cannot be resumed.
    """
    progress = progress or FetchProgress()
    root, sha256, max_bytes = check_options(root, sha256, max_size)
    if source is not None and not source.strip():
        raise CatdogError("--from is empty: give a path or a URL")
    name = name if name is not None else _name_from(source)
    if not SAFE_NAME.fullmatch(name):
        raise CatdogError(f"bad dataset name {name!r}: use letters, digits, '-' and '_'")
    try:
        if source is None and name not in REGISTRY and not (root / name).exists():  # nothing to do: create nothing
            _origin(name, None, None)
        root.mkdir(parents=True, exist_ok=True)
        with _dataset_lock(root, name, progress):
            return _fetch_locked(_Request(name, root, source, sha256, max_bytes), force, progress)
    except OSError as e:
        raise CatdogError(f"cannot fetch {name}: {os_error_line(e)}") from e


def os_error_line(e: OSError) -> str:
    """'/path: Permission denied', from an OSError, for a one-line message."""
    return f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)


@dataclass(frozen=True)
class _Request:
    name: str
    root: Path
    source: str | None  # as the user gave it
    sha256: str | None
    max_bytes: int | None

    @property
    def final(self) -> Path:
        return self.root / self.name


def _fetch_locked(req: _Request, force: bool, progress: FetchProgress) -> DatasetSummary:
    """Everything that reads or changes ROOT/NAME, under the dataset's lock."""
    done, problem = _existing(req.final)
    entry = REGISTRY.get(req.name)
    if problem == "foreign":  # catdog never deletes what it did not make, --force or not
        raise CatdogError(f"{req.final} exists but is not a dataset made by catdog fetch; move it away first")
    if problem == "damaged" and not force:
        raise CatdogError(f"{req.final} has a damaged {MARKER}; pass --force to fetch it again")
    if problem == "damaged" and req.source is None and entry is None:
        raise CatdogError(
            f"{req.final} has a damaged {MARKER}, which said where it came from; pass --force with --from PATH_OR_URL"
        )
    origin = _origin(req.name, req.source if req.source is not None else done.source if done else None, entry)
    if done is not None and not force:
        if req.source is not None and done.source != origin:
            raise CatdogError(f"{req.name} was fetched from {done.source}; pass --force to replace it from {origin}")
        done.path, done.cached = req.final, True
        return done
    for stale in req.root.glob(f".{req.name}.*.tmp"):  # left by a fetch that was killed: we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    return _make(req, origin, entry, progress)


def _existing(final: Path) -> tuple[DatasetSummary | None, str | None]:
    """(its summary, None) for a dataset fetch made; (None, "foreign" or "damaged") for any other thing at
    ROOT/NAME; (None, None) when there is nothing."""
    if not os.path.lexists(final):
        return None, None
    marker = final / MARKER
    if not final.is_dir() or not marker.exists():
        return None, "foreign"
    try:
        if marker.stat().st_size > MARKER_MAX_BYTES:
            return None, "damaged"
        return DatasetSummary.from_json(json.loads(marker.read_text(encoding="utf-8"))), None
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, not a summary, absurdly nested
        return None, "damaged"


def _origin(name: str, source: str | None, entry: Source | None) -> str:
    """Where this fetch reads from: a URL, or the real path of a local archive or folder."""
    if source is None:
        if entry is None:
            raise CatdogError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)} (or give --from PATH_OR_URL)")
        source = entry.url
    if "://" not in source:
        return os.path.realpath(Path(source).expanduser())
    _url(source)
    return source


def _url(source: str) -> ParseResult:
    """An http(s) URL with a host, parsed; anything else is refused before a connection is tried."""
    try:
        url = urlparse(source)
        url.port  # noqa: B018 -- parsing the port is what checks it
    except ValueError as e:
        raise CatdogError(f"--from {source}: not a valid URL ({e})") from None
    if url.scheme.lower() not in ("http", "https"):
        raise CatdogError(f"--from {source}: catdog downloads http and https URLs; give a local path instead")
    if not url.hostname:
        raise CatdogError(f"--from {source}: the URL names no host")
    return url


@contextmanager
def _dataset_lock(root: Path, name: str, progress: FetchProgress) -> Iterator[None]:
    """Hold ROOT/.NAME.lock while fetching NAME. A second fetch waits (saying so) up to LOCK_WAIT_S, then
    gives up with one line. The lock goes with the process: a killed fetch never leaves a stale one. The file
    is deleted by its holder, which is why a waiter checks that the file it locked is still the lock file."""
    path = root / f".{name}.lock"
    if fcntl is None:
        yield
        return
    fd = _acquire(path, name, progress)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # while holding it, so no one can lock the old file and think it is theirs
        os.close(fd)


def _acquire(path: Path, name: str, progress: FetchProgress) -> int:
    deadline = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 20, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
        except OSError as e:  # a file system without locks (some network shares): go on, and say so
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            progress.note(f"cannot lock {path} on this file system: run one fetch of {name} at a time")
            return fd
        else:
            if _is_current(fd, path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
                return fd
            os.close(fd)  # the holder finished and deleted it between our open and our lock: try the new one
            continue
        if deadline is None:
            deadline = time.monotonic() + LOCK_WAIT_S
            if LOCK_WAIT_S > 0:
                progress.note(f"waiting for another catdog fetch of {name} (pid {holder}) to finish")
        if time.monotonic() >= deadline:
            raise CatdogError(
                f"another catdog fetch of {name} (pid {holder}) is still running; try again when it has finished"
            )
        time.sleep(LOCK_POLL_S)


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _make(req: _Request, origin: str, entry: Source | None, progress: FetchProgress) -> DatasetSummary:
    """Build the dataset in a temporary folder and rename it into place; on any failure nothing is left."""
    work = Path(tempfile.mkdtemp(prefix=f".{req.name}.", suffix=".tmp", dir=req.root))
    downloaded = None
    try:
        if "://" in origin:
            downloaded = req.root / ".downloads" / _download_name(req.name, origin)
            tree, digest, budget = _download(req, origin, entry, downloaded, work, progress)
        else:
            tree, digest, budget = _local(req, Path(origin), work, progress)
        summary = _build(tree, work, req, entry, budget, progress)
        summary.source, summary.sha256 = origin, digest
        (work / "out" / MARKER).write_text(json.dumps(summary.to_json(), indent=1), encoding="utf-8")
        _publish(work, req.final)
    except CatdogError:  # an archive that is unsafe, damaged or unreadable will not get better: drop it
        if downloaded is not None:
            downloaded.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if downloaded is not None:  # the archive was only a means, and large (petimages: 787 MB); a fetch that was
        downloaded.unlink(missing_ok=True)  # interrupted after downloading keeps it, to pick up from there
    return summary


def _publish(work: Path, final: Path) -> None:
    """Rename work/out to final; with --force the old dataset moves aside first (rename cannot replace a
    non-empty folder), and back again if the new one cannot take its place."""
    if os.path.lexists(final):
        os.replace(final, work / "old")
    try:
        os.replace(work / "out", final)
    except BaseException:
        if os.path.lexists(work / "old"):
            os.replace(work / "old", final)
        raise


def _download(
    req: _Request, url: str, entry: Source | None, dest: Path, work: Path, progress: FetchProgress
) -> tuple[Path, str, Budget]:
    """Download (resuming) and unpack: (the unpacked tree, the archive's sha256, what unpacking may still write)."""
    known = entry if entry is not None and url == entry.url else None  # the registry's checksum and size apply
    digest = download(
        url,
        dest,
        sha256=req.sha256 or (known.sha256 if known else None),
        size=known.size if known else None,
        limit=req.max_bytes or MAX_BYTES,
        progress=progress,
        description=f"downloading {req.name}",
    )
    budget = Budget(dest.stat().st_size, req.max_bytes)
    extract(dest, work / "raw", budget, progress, f"extracting {req.name}", Path(_url(url).path).name or url)
    return work / "raw", digest, budget


def _local(req: _Request, path: Path, work: Path, progress: FetchProgress) -> tuple[Path, str | None, Budget | None]:
    """A local archive (checked and unpacked) or folder (read in place): (the tree, the archive's sha256, what
    unpacking may still write)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise CatdogError(f"{req.source}: no such file or folder") from None
    if stat.S_ISDIR(mode):
        if req.sha256 is not None:
            raise CatdogError("--sha256 verifies an archive or a download, not a folder")
        return path, None, None
    if not stat.S_ISREG(mode):  # a FIFO or a device would block or never end
        raise CatdogError(f"{req.source} is not a file or a folder (a pipe or a device?)")
    digest = sha256_file(path)
    if req.sha256 is not None and digest != req.sha256:
        raise CatdogError(f"checksum mismatch for {path}: expected sha256 {req.sha256}, got {digest}")
    budget = Budget(path.stat().st_size, req.max_bytes)
    extract(path, work / "raw", budget, progress, f"extracting {req.name}", str(req.source))  # named as typed
    return work / "raw", digest, budget


def _name_from(source: str | None) -> str:
    """'.../catdog.zip' -> 'catdog', 'https://host/x/hymenoptera_data.tar.gz?dl=1' -> 'hymenoptera_data'."""
    if source is None:
        raise CatdogError(f"name a dataset ({', '.join(REGISTRY)}) or give --from PATH_OR_URL")
    base = Path(_url(source).path if "://" in source else source).expanduser().name
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


# --- layout: recognise what the source looks like, then rebuild it as the standard layout ---------------

Plan = dict[str, dict[str, list[Path]]]  # {split: {class: images}}; '' is the class of unlabeled images


def _find_root(
    tree: Path, work: Path, budget: Budget | None, max_bytes: int | None, progress: FetchProgress, depth: int = 0
) -> Path:
    """Step into wrapper folders (hymenoptera_data/, PetImages/'s parent), and unpack archives inside
    archives (Kaggle's dogs-vs-cats.zip holds train.zip and test1.zip)."""
    folder, seen, walk = tree, set(), Walk(tree)
    while True:
        dirs, files = walk.listing(folder)
        inner = [p for p in files if p.name.lower().endswith(ARCHIVE_SUFFIXES)]
        if not dirs and inner and not any(map(is_image_name, files)):
            return _unpack_inner(inner, work, budget, max_bytes, progress, depth)
        seen.add(os.path.realpath(folder))
        if (
            len(dirs) == 1
            and split_of(dirs[0]) is None
            and not any(map(is_image_name, files))
            and os.path.realpath(dirs[0]) not in seen
        ):
            folder = dirs[0]
            continue
        return folder


def _unpack_inner(
    inner: list[Path], work: Path, budget: Budget | None, max_bytes: int | None, progress: FetchProgress, depth: int
) -> Path:
    """Unpack every inner archive into one tree; a path two of them hold is refused, never overwritten. What
    they write counts toward the outer archive's budget."""
    if depth >= MAX_NESTING:
        raise CatdogError(f"refusing {inner[0].name}: archives nested more than {MAX_NESTING + 1} deep")
    budget = budget or Budget(sum(p.stat().st_size for p in inner), max_bytes)  # archives in a folder
    nested = work / f"nested{depth}"
    for archive in inner:
        extract(archive, nested, budget, progress, f"extracting {archive.name}")
    return _find_root(nested, work, budget, max_bytes, progress, depth + 1)


def _rel(path: Path, base: Path) -> str:
    """How `skipped` names a file: as it is in the source, a folder with a trailing '/'."""
    rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)
    return rel + "/" if path.is_dir() else rel


Skipped = list[tuple[Path, str]]  # (file or folder, why it is left out)


def _images(folder: Path, walk: Walk, skipped: Skipped) -> list[Path]:
    """Every image under folder, walked by the same rules as training data; other files are reported as skipped."""
    images, others = walk.images(folder)
    skipped += others
    return images


def _labeled(folder: Path, walk: Walk, skipped: Skipped) -> dict[str, list[Path]] | None:
    """{class: images} from class folders or from Kaggle file names; None when the images carry no label."""
    dirs, files = walk.listing(folder)
    loose = [p for p in files if is_image_name(p)]
    classes = {d.name: imgs for d in dirs if (imgs := _images(d, walk, skipped))}
    if classes:
        skipped += [(p, "not in a class folder") for p in loose]
        return classes
    if loose and all(KAGGLE_NAME.fullmatch(p.name) for p in loose):
        by_label: dict[str, list[Path]] = {}
        for p in loose:
            by_label.setdefault(KAGGLE_NAME.fullmatch(p.name).group(1).lower(), []).append(p)
        return by_label
    return None


def _plan(root: Path, walk: Walk, skipped: Skipped) -> Plan:
    """{split: {class: images}} for any of the layouts catdog reads: split folders (train/, val/ or
    validation/, test/, test1/) holding class folders or Kaggle file names, or class folders alone, or
    Kaggle file names alone."""
    dirs, _ = walk.listing(root)
    split_dirs = [(split, d) for d in dirs if (split := split_of(d)) is not None]
    if not split_dirs:
        labeled = _labeled(root, walk, skipped)
        if labeled is None:
            raise CatdogError(
                "cannot tell the classes: expected split folders (train/, val/), class folders "
                "(cat/, dog/) or Kaggle file names (cat.1.jpg)"
            )
        return {"train": labeled}
    skipped += [(d, "not a split folder") for d in dirs if split_of(d) is None]
    plan: Plan = {}
    for split, d in split_dirs:
        labeled = None if split == "unlabeled" else _labeled(d, walk, skipped)
        if labeled is None:  # e.g. Kaggle's test1/1.jpg
            plan.setdefault("unlabeled", {}).setdefault("", []).extend(_images(d, walk, skipped))
        else:
            for cls, files in labeled.items():
                plan.setdefault(split, {}).setdefault(cls, []).extend(files)
    return plan


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _problem(path: Path, decode: bool) -> str | None:
    """Why an image is unusable, or None. Opening it catches empty and non-image files for the cost of
    a header read; decode=True decodes it all (at 1/8 scale: fast, yet it still reads every byte)."""
    try:
        if os.stat(path).st_size == 0:
            return "empty file"
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:  # a broken link, an unreadable file
        return f"cannot read ({e.strerror or e})"
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


def _keep(plan: Plan, drop: dict[Path, str], skipped: Skipped) -> Plan:
    """The plan without the files in drop ({file: why}), each one reported."""
    kept: Plan = {}
    for split, classes in plan.items():
        for cls, ps in classes.items():
            kept.setdefault(split, {})[cls] = [p for p in ps if p not in drop]
            skipped += [(p, drop[p]) for p in ps if p in drop]
    return kept


def _unusable(plan: Plan, decode: bool, progress: FetchProgress) -> dict[Path, str]:
    files = [p for classes in plan.values() for ps in classes.values() for p in ps]
    progress.start(sum(map(_size, files)), "checking images")
    bad = {}
    for p in files:
        if reason := _problem(p, decode):
            bad[p] = reason
        progress.advance(_size(p))
    progress.done()
    return bad


def _renamed(plan: Plan, rename: dict[str, str]) -> Plan:
    """Source folder names to catdog's class names (cats/ -> cat); folders that end up with one name merge."""
    out: Plan = {}
    for split, classes in plan.items():
        for cls, ps in classes.items():
            out.setdefault(split, {}).setdefault(rename.get(cls, cls), []).extend(ps)
    return out


def _place(src: Path, folder: Path, move: bool) -> None:
    """Move (or copy, from a user's folder) src into folder; a same-named file (nested source folders
    flattened into one class folder) gets -1, -2, ..., never replaced."""
    folder.mkdir(parents=True, exist_ok=True)
    if move:
        publish_new(src, folder, src.name)
    else:
        copy_new(src, folder)


def _folder(out: Path, split: str, cls: str) -> Path:
    return out / split / cls if cls else out / split


def _place_all(plan: Plan, out: Path, work: Path, limit: int) -> None:
    """Move what fetch unpacked itself; copy a user's files (at most `limit` bytes of them)."""
    files = [p for classes in plan.values() for ps in classes.values() for p in ps]
    copied = sum(_size(p) for p in files if not p.is_relative_to(work))
    if copied > limit:
        raise CatdogError(
            f"the images to copy take {size_text(copied)}, over the {size_text(limit)} limit; {MAX_SIZE_HINT}"
        )
    for split in SPLIT_ORDER:
        for cls, ps in plan.get(split, {}).items():
            for p in ps:
                _place(p, _folder(out, split, cls), p.is_relative_to(work))


def _verify(plan: Plan, out: Path, name: str) -> None:
    """Count what arrived, per split and class, before the marker says the dataset is complete."""
    for split, classes in plan.items():
        for cls, ps in classes.items():
            folder = _folder(out, split, cls)
            placed = (
                sum(1 for f in os.scandir(folder) if f.is_file() and not f.name.startswith("."))
                if folder.is_dir()
                else 0
            )
            if placed != len(ps):
                raise CatdogError(
                    f"{name}: {placed} of {len(ps)} images of {_folder(Path(split), '', cls)} arrived "
                    "in the new dataset; nothing was kept (try again)"
                )


def _build(
    tree: Path, work: Path, req: _Request, entry: Source | None, budget: Budget | None, progress: FetchProgress
) -> DatasetSummary:
    """Rebuild the source tree as out/{train,val,test}/<class>/* + out/unlabeled/*, leaving bad images out."""
    root = _find_root(tree, work, budget, req.max_bytes, progress)
    base = tree if root.is_relative_to(tree) else root  # `skipped` names files as they are in the source
    walk, skipped = Walk(base), []
    plan = _plan(root, walk, skipped)
    dropped = walk.duplicates()
    skipped = [(p, why) for p, why in skipped + walk.cut if p not in dropped]  # a file reached twice: once
    plan = _keep(plan, {p: f"same file as {_rel(k, base)}" for p, k in dropped.items()}, skipped)
    plan = _keep(plan, _unusable(plan, entry.decode if entry else False, progress), skipped)
    plan = _renamed(plan, entry.classes if entry else {})
    if not any(plan.get("train", {}).values()):
        raise CatdogError(
            "found no labeled training images (expected train/<class>/ folders, class folders "
            "or Kaggle file names such as cat.1.jpg)"
        )
    if "val" not in plan:  # e.g. Kaggle's train/ only: hold out 20 % of each class
        plan["train"], plan["val"] = stratified_split(plan["train"], VAL_FRACTION, seed=0)
    out = work / "out"
    _place_all(plan, out, work, req.max_bytes or MAX_BYTES)
    _verify(plan, out, req.name)
    classes = sorted({c for s in ("train", "val", "test") for c, ps in plan.get(s, {}).items() if ps})
    splits = {s: sum(map(len, plan[s].values())) for s in SPLIT_ORDER if s in plan}
    return DatasetSummary(
        name=req.name,
        path=req.final,
        classes=classes,
        splits=splits,
        skipped=[(_rel(p, base), why) for p, why in skipped],
    )
