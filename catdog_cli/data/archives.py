"""Unpacking dataset archives (zip, tar): bounded (size, ratio, entries), never writing outside the target folder
and never over a file; and what the long steps of a fetch report.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from catdog_cli.core.files import writing
from catdog_cli.errors import CatdogError

CHUNK = 1 << 20  # bytes read and written at a time
GIB = 1 << 30
MAX_BYTES = 20 * GIB  # the most one fetch downloads, unpacks or copies, unless --max-size says otherwise
MAX_RATIO = 100  # ...and an archive unpacks to at most this many times its own size (a zip bomb gets 1000s)
ENTRY_COST = 4096  # what an entry costs besides its bytes (a file takes a block on disk): bounds entry counts too
MAX_SIZE_HINT = "pass --max-size GIB if you trust it"
MAX_DEPTH = 64  # folders in an entry's path: datasets use a handful
MAX_NAME = 4096  # characters in an entry's path (Linux's PATH_MAX)


class FetchProgress:
    """Callbacks for the long steps (download, extract, check) and notes; the CLI draws them as a rich bar.

    Units are bytes. start() may come again for the same step when a download restarts from zero.
    This default does nothing.
    """

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass

    def note(self, text: str) -> None:
        """Something the user should know while waiting (another fetch holds the dataset's lock)."""


def size_text(n: int) -> str:
    """1.5 GiB, 200 MiB: sizes in messages."""
    return f"{n / GIB:.3g} GiB" if n >= GIB else f"{n / (1 << 20):.3g} MiB"


# --- extraction ----------------------------------------------------------------------------------------


class Budget:
    """What unpacking may still write, shared by an archive and the archives inside it: --max-size when given,
    else MAX_RATIO times the outer archive's size, at most MAX_BYTES. Every entry is charged before any
    byte is written, so a zip bomb is refused before it starts."""

    def __init__(self, archive_size: int, max_bytes: int | None = None) -> None:
        if max_bytes is not None:
            self.left, self.why = max_bytes, f"the --max-size of {size_text(max_bytes)}"
        elif MAX_RATIO * archive_size < MAX_BYTES:
            self.left, self.why = MAX_RATIO * archive_size, f"{MAX_RATIO} times the archive's size (a zip bomb?)"
        else:
            self.left, self.why = MAX_BYTES, f"{size_text(MAX_BYTES)}"

    def spend(self, n: int, label: str) -> None:
        if n > self.left:
            raise CatdogError(f"refusing {label}: it unpacks to more than {self.why}; {MAX_SIZE_HINT}")
        self.left -= n


def _member_path(name: str, label: str) -> PurePosixPath:
    """The entry's path inside the target, refusing absolute paths, drive letters, '..', and paths deeper or
    longer than any file system takes (checking and creating those would cost without bound)."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise CatdogError(f"refusing {label}: entry {name!r} would be written outside the target folder")
    if len(p.parts) > MAX_DEPTH or len(name) > MAX_NAME:
        raise CatdogError(
            f"refusing {label}: entry {name[:80]!r}... is more than {MAX_DEPTH} folders deep or "
            f"{MAX_NAME} characters long"
        )
    return p


@dataclass
class _Entry:
    """An archive member, zip or tar alike: its name, what it is, its size, and how to read it."""

    name: str
    kind: str  # "file", "dir", "link" or "other" (devices, fifos)
    size: int
    open: Callable[[], IO[bytes]]


def _zip_entries(zf: zipfile.ZipFile, label: str, budget: Budget) -> list[_Entry]:
    entries = []
    for info in zf.infolist():
        kind = "link" if stat.S_ISLNK(info.external_attr >> 16) else "dir" if info.is_dir() else "file"
        if info.flag_bits & 0x1:
            raise CatdogError(f"refusing {label}: entry {info.filename!r} is encrypted")
        if kind == "file" and info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            # bzip2 and lzma entries decompress without a bound on memory inside zipfile
            raise CatdogError(
                f"refusing {label}: entry {info.filename!r} uses compression method "
                f"{info.compress_type}; catdog unpacks stored and deflated zip entries (or a .tar.*)"
            )
        budget.spend(info.file_size + ENTRY_COST, label)
        entries.append(_Entry(info.filename, kind, info.file_size, lambda i=info: zf.open(i)))
    return entries


def _tar_entries(tf: tarfile.TarFile, label: str, budget: Budget) -> list[_Entry]:
    entries = []
    for m in tf:  # one header at a time: a bomb of headers is stopped by the budget, not listed whole
        kind = "link" if m.issym() or m.islnk() else "dir" if m.isdir() else "file" if m.isfile() else "other"
        budget.spend(m.size + ENTRY_COST, label)
        entries.append(_Entry(m.name, kind, m.size, lambda m=m: tf.extractfile(m)))
    return entries


# what a damaged or hostile archive makes zipfile/tarfile raise (found by fuzzing): never a traceback
DAMAGED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    ValueError,
)


def extract(
    archive: Path,
    dest: Path,
    budget: Budget,
    progress: FetchProgress | None = None,
    description: str | None = None,
    label: str | None = None,
) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into dest, charging `budget` for what it writes.

    Archives from mirrors and users are not trusted: every entry is checked before anything is written.
    Absolute paths, '..', links, device files and encrypted entries are refused, and so is an entry that
    would replace a file: the same path twice, a path that is a file in one entry and a folder in another,
    or a file already in dest (from another archive). `label` names the archive in messages.
    """
    progress = progress or FetchProgress()
    label = label or archive.name
    description = description or f"extracting {label}"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _extract_entries(_zip_entries(zf, label, budget), label, dest, progress, description)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _extract_entries(_tar_entries(tf, label, budget), label, dest, progress, description)
        else:
            raise CatdogError(f"{label} is not a zip or tar archive (or it is truncated)")
    except DAMAGED as e:
        raise CatdogError(f"{label} is damaged ({e}); delete it and fetch again") from e
    except OSError as e:
        raise CatdogError(
            f"cannot extract {label}: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        ) from e
    progress.done()


def _extract_entries(entries: list[_Entry], label: str, dest: Path, progress: FetchProgress, description: str) -> None:
    targets = _targets(entries, label)
    if not any(e.kind == "file" and p.parts for e, p in targets):
        raise CatdogError(f"{label} is empty: it holds no files")
    if clashes := _clashes(targets, dest):
        name, reason = clashes[0]
        raise CatdogError(
            f"refusing {label}: {len(clashes)} of its entries would overwrite a file or folder "
            f"(first: {name!r}, {reason}); catdog never lets one image replace another"
        )
    progress.start(sum(e.size for e in entries), description)
    dest.mkdir(parents=True, exist_ok=True)
    for e, p in targets:
        target = dest.joinpath(*p.parts)
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif p.parts:
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_new(target, e, label)
        progress.advance(e.size)


def _write_new(target: Path, entry: _Entry, label: str) -> None:
    """A full disk (or quota, or file size limit) is one line naming the entry: the write itself names no file."""
    with writing(f"{entry.name!r} of {label}"):
        try:
            # never over a file, even one the checks could not see (names that a case-blind disk takes as one)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            raise CatdogError(
                f"refusing {label}: entry {entry.name!r} would overwrite another (names that differ "
                "only in case, on this file system?)"
            ) from None
        with os.fdopen(fd, "wb") as dst, entry.open() as src:
            _copy(src, dst, entry.size, label)


def _targets(entries: list[_Entry], label: str) -> list[tuple[_Entry, PurePosixPath]]:
    """Each entry with its path inside dest; all checked before the first byte is written."""
    targets = []
    for e in entries:
        path = _member_path(e.name, label)
        if e.kind == "link":
            raise CatdogError(f"refusing {label}: entry {e.name!r} is a link")
        if e.kind == "other":
            raise CatdogError(f"refusing {label}: entry {e.name!r} is not a file or folder")
        targets.append((e, path))
    return targets


def _clashes(targets: list[tuple[_Entry, PurePosixPath]], dest: Path) -> list[tuple[str, str]]:
    """(entry name, why) for every entry that would replace another file or folder, in the archive or in dest."""
    folders = {p.parts for e, p in targets if e.kind == "dir"}
    folders |= {q.parts for _, p in targets for q in p.parents}
    files: set[tuple[str, ...]] = set()
    clashes = []
    for e, p in targets:
        if e.kind != "file" or not p.parts:
            continue
        if p.parts in files:
            clashes.append((e.name, "the same path twice in the archive"))
        elif p.parts in folders:
            clashes.append((e.name, "a file in one entry, a folder in another"))
        files.add(p.parts)
    if dest.exists():  # unpacking into a tree another archive made
        clashes += _clashes_on_disk(targets, dest)
    return clashes


def _clashes_on_disk(targets: list[tuple[_Entry, PurePosixPath]], dest: Path) -> list[tuple[str, str]]:
    clashes = []
    for e, p in targets:
        target = dest.joinpath(*p.parts)
        if e.kind == "file" and p.parts and os.path.lexists(target):
            clashes.append((e.name, "already unpacked from another archive"))
        elif any(dest.joinpath(*q.parts).is_file() for q in p.parents if q.parts):
            clashes.append((e.name, "its folder is a file unpacked from another archive"))
        elif e.kind == "dir" and target.exists() and not target.is_dir():
            clashes.append((e.name, "a file unpacked from another archive"))
    return clashes


def _copy(src: IO[bytes], dst: IO[bytes], size: int, label: str) -> None:
    """Copy exactly the `size` bytes an entry declares (the budget was charged for those): never more."""
    left = size
    while chunk := src.read(min(CHUNK, left + 1)):
        if len(chunk) > left:
            raise CatdogError(f"{label} is damaged: an entry holds more bytes than it declares")
        dst.write(chunk)
        left -= len(chunk)
