"""Downloading an archive: bounded, resumable (HTTP range), retried with backoff on a stalled or broken
connection, never more than its budget.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catdog_cli import __version__
from catdog_cli.core.files import writing
from catdog_cli.data.archives import CHUNK, MAX_BYTES, MAX_SIZE_HINT, FetchProgress, size_text
from catdog_cli.errors import CatdogError

RETRIES = 4  # failed attempts in a row before giving up; an attempt that got bytes resets the count
BACKOFF_S = 1.0  # wait BACKOFF_S * 2**k before retry k (1, 2, 4 s); tests set it to 0
TIMEOUT_S = 30.0  # per socket operation: a stalled connection fails and is retried instead of hanging


class Unreachable(CatdogError):
    """No route to the host (offline, or a typo in it): retrying will not help. `reason` is the line without the
    advice, for a caller with advice of its own (`fetch_named`)."""

    def __init__(self, url: str, why: object):
        self.reason = f"cannot reach {url}: {why}"
        super().__init__(f"{self.reason}; offline? download it another way and pass --from FILE")


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
            raise Unreachable(url, e.reason) from None
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
    with writing(part), open(part, mode) as f:  # a full disk: one line naming the .part (kept, to resume from)
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
