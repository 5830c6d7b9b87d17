"""Download and unpack dataset archives: resumable, verified, and never writing outside the target folder."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
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
from typing import IO

from catdog_cli import __version__
from catdog_cli.errors import CatdogError

RETRIES = 4  # failed attempts in a row before giving up; an attempt that got bytes resets the count
BACKOFF_S = 1.0  # wait BACKOFF_S * 2**k before retry k (1, 2, 4 s); tests set it to 0
TIMEOUT_S = 30.0  # per socket operation: a stalled connection fails and is retried instead of hanging
CHUNK = 1 << 20


class FetchProgress:
    """Callbacks for the long steps (download, extract, check); the CLI draws them as a rich bar.

    Units are bytes. start() may come again for the same step when a download restarts from zero.
    This default does nothing.
    """

    def start(self, total: int | None, description: str) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class _Transient(Exception):
    """A failure worth retrying: dropped connection, timeout, HTTP 5xx/429."""


def download(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
             progress: FetchProgress | None = None, description: str | None = None) -> str:
    """Fetch url to dest and return its sha256.

    Bytes stream into dest.part, which later attempts (and later runs, after Ctrl-C) continue with an
    HTTP Range request; dest appears only once complete and verified, and a file that fails verification
    is deleted so the next run starts clean.
    """
    progress = progress or FetchProgress()
    description = description or f"downloading {dest.name}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # verified by an earlier run that stopped before extracting
        digest = sha256_file(dest)
        if (sha256 is None or digest == sha256) and (size is None or dest.stat().st_size == size):
            return digest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    failures = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _get(url, part, size, progress, description)
            break
        except _Transient as e:
            after = part.stat().st_size if part.exists() else 0
            failures = 0 if after > before else failures + 1
            if failures >= RETRIES:
                raise CatdogError(f"could not download {url}: {e} ({RETRIES} tries in a row); rerun to "
                                  f"resume, or download it another way and pass --from FILE") from None
            if BACKOFF_S:
                time.sleep(BACKOFF_S * 2 ** max(failures - 1, 0))
    progress.done()
    digest, got = sha256_file(part), part.stat().st_size
    if sha256 is not None and digest != sha256:
        part.unlink()
        raise CatdogError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest}; "
                          "the download was deleted")
    if size is not None and got != size:
        part.unlink()
        raise CatdogError(f"size mismatch for {url}: expected {size} bytes, got {got}; the download was "
                          "deleted (if the file changed upstream, pass the URL with --from)")
    os.replace(part, dest)
    return digest


def _get(url: str, part: Path, size: int | None, progress: FetchProgress, description: str) -> None:
    """One attempt: append to part from where it stops, or restart it when the server ignores Range."""
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": f"catdog/{__version__}"})
    if offset:
        req.add_header("Range", f"bytes={offset}-")
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # nothing left to send: part is complete, or longer than the file
            m = re.fullmatch(r"bytes \*/(\d+)", e.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == offset:
                return
            part.unlink()
            raise _Transient("the server refused to resume; restarting") from None
        if e.code in (408, 429) or e.code >= 500:
            raise _Transient(f"HTTP {e.code} {e.reason}") from None
        raise CatdogError(f"HTTP {e.code} {e.reason} for {url}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, socket.gaierror):  # no DNS: offline, or a typo; retrying will not help
            raise CatdogError(f"cannot reach {url}: {e.reason}; offline? download it another way and "
                              "pass --from FILE") from None
        raise _Transient(str(e.reason)) from None
    except (OSError, http.client.HTTPException) as e:
        raise _Transient(str(e) or type(e).__name__) from None

    with resp:
        length = resp.headers.get("Content-Length")
        length = int(length) if length is not None else None
        if offset and resp.status == 206:
            m = re.fullmatch(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                part.unlink()
                raise _Transient("the server resumed at the wrong offset; restarting")
            total = int(m.group(2)) if m.group(2) != "*" else size
            mode = "ab"
        else:  # a fresh download, or a server that ignores Range: start over
            offset, mode = 0, "wb"
            total = length if length is not None else size
        progress.start(total, description)
        progress.advance(offset)
        got = 0
        with open(part, mode) as f:
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    raise _Transient(f"connection lost after {offset + got} bytes ({e})") from None
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                progress.advance(len(chunk))
    if length is not None and got < length:  # urllib returns a short body silently when a peer hangs up
        raise _Transient(f"connection closed after {offset + got} of {offset + length} bytes")


def _member_path(name: str, archive: Path) -> PurePosixPath:
    """The entry's path inside the target, refusing absolute paths, drive letters and '..'."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and p.parts[0].endswith(":")):
        raise CatdogError(f"refusing {archive.name}: entry {name!r} would be written outside the target folder")
    return p


@dataclass
class _Entry:
    """An archive member, zip or tar alike: its name, what it is, its size, and how to read it."""

    name: str
    kind: str  # "file", "dir", "link" or "other" (devices, fifos)
    size: int
    open: Callable[[], IO[bytes]]


def _zip_entries(zf: zipfile.ZipFile) -> list[_Entry]:
    def kind(info: zipfile.ZipInfo) -> str:
        return "link" if stat.S_ISLNK(info.external_attr >> 16) else "dir" if info.is_dir() else "file"

    return [_Entry(i.filename, kind(i), i.file_size, lambda i=i: zf.open(i)) for i in zf.infolist()]


def _tar_entries(tf: tarfile.TarFile) -> list[_Entry]:
    def kind(m: tarfile.TarInfo) -> str:
        return "link" if m.issym() or m.islnk() else "dir" if m.isdir() else "file" if m.isfile() else "other"

    return [_Entry(m.name, kind(m), m.size, lambda m=m: tf.extractfile(m)) for m in tf.getmembers()]


def extract(archive: Path, dest: Path, progress: FetchProgress | None = None, description: str | None = None) -> None:
    """Unpack a zip or tar(.gz/.bz2/.xz) archive into dest.

    Archives from mirrors and users are not trusted: every entry is checked before anything is written,
    and absolute paths, '..', links and device files are refused.
    """
    progress = progress or FetchProgress()
    description = description or f"extracting {archive.name}"
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                _extract_entries(_zip_entries(zf), archive, dest, progress, description)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                _extract_entries(_tar_entries(tf), archive, dest, progress, description)
        else:
            raise CatdogError(f"{archive} is not a zip or tar archive (or it is truncated)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as e:
        raise CatdogError(f"{archive.name} is damaged ({e}); delete it and fetch again") from None
    except OSError as e:
        raise CatdogError(f"cannot extract {archive.name}: {e}") from None
    progress.done()


def _extract_entries(entries: list[_Entry], archive: Path, dest: Path, progress: FetchProgress,
                     description: str) -> None:
    for e in entries:  # all checked before the first byte is written
        _member_path(e.name, archive)
        if e.kind == "link":
            raise CatdogError(f"refusing {archive.name}: entry {e.name!r} is a link")
        if e.kind == "other":
            raise CatdogError(f"refusing {archive.name}: entry {e.name!r} is not a file or folder")
    progress.start(sum(e.size for e in entries), description)
    for e in entries:
        target = dest.joinpath(*_member_path(e.name, archive).parts)
        if e.kind == "dir":
            target.mkdir(parents=True, exist_ok=True)
        elif target != dest:
            target.parent.mkdir(parents=True, exist_ok=True)
            with e.open() as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
        progress.advance(e.size)
