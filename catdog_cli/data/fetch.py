"""`catdog fetch`: named datasets (and pretrained weights), downloaded, verified and laid out for training.

Every dataset ends up as ROOT/NAME/{train,val[,test]}/<class>/* plus ROOT/NAME/unlabeled/* when the source
has unlabeled images. It is built in a temporary folder beside ROOT/NAME, its image counts checked against the
plan, marker file included, and renamed into place in one step: a folder with the marker is complete, so a
rerun is a no-op, and an interrupted fetch never leaves anything that looks finished. One fetch of a dataset
runs at a time (a lock file in ROOT); a second one waits for it, then finds the dataset complete.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import ParseResult, urlparse

from catdog_cli.core.files import writing
from catdog_cli.core.paths import data_root
from catdog_cli.data.archives import (
    GIB,
    MAX_BYTES,
    Budget,
    FetchProgress,
    extract,
)
from catdog_cli.data.catalog import (
    ARCHIVE_SUFFIXES,
    MARKER,
    MARKER_MAX_BYTES,
    REGISTRY,
    DatasetSummary,
    Request,
    Source,
)
from catdog_cli.data.download import Unreachable, download, sha256_file
from catdog_cli.data.layout import build
from catdog_cli.errors import CatdogError

try:
    import fcntl
except ImportError:  # Windows: no flock, so fetches of one dataset are not serialized there
    fcntl = None

__all__ = ["REGISTRY", "DatasetSummary", "FetchProgress", "check_options", "fetch", "fetch_named", "fetched"]

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_SIZE_GIB = 1 << 20  # the largest --max-size taken (1 PiB): beyond it a typo, not a dataset
LOCK_WAIT_S = 1800.0  # how long a second fetch of a dataset waits for the first before it gives up
LOCK_POLL_S = 0.2


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
            return _fetch_locked(Request(name, root, source, sha256, max_bytes), force, progress)
    except OSError as e:
        raise CatdogError(f"cannot fetch {name}: {os_error_line(e)}") from e


def fetch_named(data: str, progress: FetchProgress | None = None) -> DatasetSummary | None:
    """`--data NAME` of a dataset catdog knows, with no folder NAME here and nothing at ROOT/NAME yet: fetched
    first, as `catdog fetch NAME` does, after a note that says so and where. None when there is nothing to
    fetch: a folder here comes first (core.paths.resolve_data), and whatever is at ROOT/NAME is read as it is.
    A fetch that fails (offline) is one line that names `catdog fetch NAME --from ARCHIVE`."""
    if data not in REGISTRY or Path(data).is_dir():
        return None
    root = data_root()
    if os.path.lexists(root / data):
        return None
    progress = progress or FetchProgress()
    progress.note(f"--data {data}: fetching it into {root / data} first (as `catdog fetch {data}` does)")
    try:
        return fetch(data, root=root, progress=progress)
    except CatdogError as e:
        url = REGISTRY[data].url
        reason = e.reason if isinstance(e, Unreachable) else str(e)  # its own advice (--from FILE) is replaced
        archive = "it" if url in reason else url
        raise CatdogError(
            f"--data {data} is not fetched yet, and fetching it failed: {reason}; download {archive} another way "
            f"and run `catdog fetch {data} --from ARCHIVE`"
        ) from None


def os_error_line(e: OSError) -> str:
    """'/path: Permission denied', from an OSError, for a one-line message."""
    return f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)


def _fetch_locked(req: Request, force: bool, progress: FetchProgress) -> DatasetSummary:
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


def fetched(root: Path) -> dict[str, DatasetSummary | str]:
    """Every dataset folder in the data root: its summary when fetch made it whole, else "foreign" (a folder
    fetch did not make) or "damaged"."""
    if not root.is_dir():
        return {}
    found: dict[str, DatasetSummary | str] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary, problem = _existing(folder)
        found[folder.name] = summary or problem or "foreign"
    return found


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


def _make(req: Request, origin: str, entry: Source | None, progress: FetchProgress) -> DatasetSummary:
    """Build the dataset in a temporary folder and rename it into place; on any failure nothing is left."""
    work = Path(tempfile.mkdtemp(prefix=f".{req.name}.", suffix=".tmp", dir=req.root))
    downloaded = None
    try:
        if "://" in origin:
            downloaded = req.root / ".downloads" / _download_name(req.name, origin)
            tree, digest, budget = _download(req, origin, entry, downloaded, work, progress)
        else:
            tree, digest, budget = _local(req, Path(origin), work, progress)
        summary = build(tree, work, req, entry, budget, progress)
        summary.source, summary.sha256 = origin, digest
        with writing(req.final / MARKER):  # the write names no file: the one it was for
            (work / "out" / MARKER).write_text(json.dumps(summary.to_json(), indent=1), encoding="utf-8")
        _publish(work, req.final)
    except CatdogError:  # an archive that is unsafe, damaged or unreadable will not get better: drop it
        if downloaded is not None:
            _drop_download(downloaded)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if downloaded is not None:  # the archive was only a means, and large (petimages: 787 MB); a fetch that was
        _drop_download(downloaded)  # interrupted after downloading keeps it, to pick up from there
    return summary


def _drop_download(path: Path) -> None:
    """Delete a downloaded archive, and ROOT/.downloads with it when nothing else is there (a `.part` to resume
    from stays, and the folder with it)."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # not empty, or already gone
        path.parent.rmdir()


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
    req: Request, url: str, entry: Source | None, dest: Path, work: Path, progress: FetchProgress
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


def _local(req: Request, path: Path, work: Path, progress: FetchProgress) -> tuple[Path, str | None, Budget | None]:
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
