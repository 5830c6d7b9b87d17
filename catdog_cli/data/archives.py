"""Download and unpack dataset archives: resumable, verified, bounded, never writing outside the target folder
and never over a file."""

from __future__ import annotations

import hashlib
import http.client
import lzma
import os
import re
import socket
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from catdog_cli import __version__
from catdog_cli.errors import CatdogError

RETRIES = 4  # failed attempts in a row before giving up; an attempt that got bytes resets the count
BACKOFF_S = 1.0  # wait BACKOFF_S * 2**k before retry k (1, 2, 4 s); tests set it to 0
TIMEOUT_S = 30.0  # per socket operation: a stalled connection fails and is retried instead of hanging
CHUNK = 1 << 20
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _Transient(Exception):
    """A failure worth retrying: dropped connection, timeout, HTTP 5xx/429."""


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    limit: int = MAX_BYTES,
    progress: FetchProgress | None = None,
    description: str | None = None,
) -> str:
    """Fetch url to dest and return its sha256.

    Bytes stream into dest.part, which later attempts (and later runs, after Ctrl-C or a lost connection)
    continue with an HTTP Range request; dest appears only once complete and verified. A download that fails
    for good (checksum, size, over `limit` bytes) is deleted, so the next run starts clean.
    """
    progress = progress or FetchProgress()
    description = description or f"downloading {dest.name}"
    if size is not None and size > limit:
        raise CatdogError(f"{url} is {size_text(size)}, over the {size_text(limit)} limit; {MAX_SIZE_HINT}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # verified by an earlier run that stopped before extracting
        digest = sha256_file(dest)
        if (sha256 is None or digest == sha256) and (size is None or dest.stat().st_size == size):
            return digest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    _get_with_retries(url, part, _Cap(url, size, limit), progress, description)
    progress.done()
    digest, got = sha256_file(part), part.stat().st_size
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise CatdogError(
            f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; the download was deleted"
        )
    if size is not None and got != size:
        part.unlink()
        raise CatdogError(
            f"size mismatch for {url}: expected {size} bytes, got {got}; the download was "
            "deleted (if the file changed upstream, pass the URL with --from)"
        )
    os.replace(part, dest)
    return digest


def size_text(n: int) -> str:
    """1.5 GiB, 200 MiB: sizes in messages."""
    return f"{n / GIB:.3g} GiB" if n >= GIB else f"{n / (1 << 20):.3g} MiB"


@dataclass(frozen=True)
class _Cap:
    """The most a download may be: its known size, else the limit."""

    url: str
    size: int | None
    limit: int

    @property
    def bytes(self) -> int:
        return self.size if self.size is not None else self.limit

    def refuse(self, part: Path, got: int) -> CatdogError:
        part.unlink(missing_ok=True)
        if self.size is not None:
            return CatdogError(
                f"size mismatch for {self.url}: expected {self.size} bytes, the server sends "
                f"{got} or more; the download was deleted"
            )
        return CatdogError(
            f"{self.url} is over the {size_text(self.limit)} limit ({got} bytes or more); the download "
            f"was deleted; {MAX_SIZE_HINT}"
        )


def _get_with_retries(url: str, part: Path, cap: _Cap, progress: FetchProgress, description: str) -> None:
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _get(url, part, cap, progress, description)
            return
        except _Transient as e:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures >= RETRIES:
                raise CatdogError(
                    f"could not download {url}: {e} ({RETRIES} tries in a row); rerun to "
                    f"resume, or download it another way and pass --from FILE"
                ) from None
            if BACKOFF_S:
                time.sleep(BACKOFF_S * 2 ** max(failures - 1, 0))


def _get(url: str, part: Path, cap: _Cap, progress: FetchProgress, description: str) -> None:
    """One attempt: append to part from where it stops, or restart it when the server ignores Range."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, part, offset)
    if resp is None:  # the part file is complete already
        return
    with resp:
        length = _header_int(resp.headers, "Content-Length")
        mode, offset, total = _resume(resp, part, offset, length, cap)
        if total is not None and total > cap.bytes:
            raise cap.refuse(part, total)
        progress.start(total, description)
        progress.advance(offset)
        got = _stream(resp, part, mode, offset, cap, progress)
    if length is not None and got < length:  # urllib returns a short body silently when a peer hangs up
        raise _Transient(f"connection closed after {offset + got} of {offset + length} bytes")


def _open(url: str, part: Path, offset: int) -> http.client.HTTPResponse | None:
    """The response, with every failure sorted into retry (_Transient) or give up (CatdogError)."""
    req = urllib.request.Request(url, headers={"User-Agent": f"catdog/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: part is complete, or longer than the file
            m = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return None
            part.unlink()
            raise _Transient("the server refused to resume; restarting") from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise CatdogError(f"HTTP {e.code} {e.reason} for {url}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):  # no DNS: offline, or a typo; retrying will not help
            raise CatdogError(
                f"cannot reach {url}: {e.reason}; offline? download it another way and pass --from FILE"
            ) from None
        raise _Transient(str(e.reason)) from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # ValueError: a malformed redirect or header
        raise _Transient(str(e) or type(e).__name__) from None


def _header_int(headers: Any, name: str) -> int | None:
    """A non-negative integer header, or None when it is missing or not a number."""
    value = headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


def _resume(resp: Any, part: Path, offset: int, length: int | None, cap: _Cap) -> tuple[str, int, int | None]:
    """(file mode, offset, total size or None): append where a 206 says it resumes, else start over."""
    if offset and resp.status == 206:
        m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if not m or int(m.group(1)) != offset:
            part.unlink()
            raise _Transient("the server resumed at the wrong offset; restarting")
        return "ab", offset, int(m.group(2)) if m.group(2) != "*" else cap.size
    return "wb", 0, length if length is not None else cap.size


def _stream(resp: Any, part: Path, mode: str, offset: int, cap: _Cap, progress: FetchProgress) -> int:
    """Append the body to part; stops (and deletes part) the moment it passes the cap."""
    got = 0
    with open(part, mode) as f:
        while True:
            try:
                chunk = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as e:
                raise _Transient(f"connection lost after {offset + got} bytes ({e})") from None
            if not chunk:
                return got
            got += len(chunk)
            if offset + got > cap.bytes:
                f.close()
                raise cap.refuse(part, offset + got)
            f.write(chunk)
            progress.advance(len(chunk))


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
