"""Writing files so that nothing a user made is replaced and nothing half-written appears under a real name:
through a hidden temp file, then linked to a free name (`write_new`, `create_new`) or renamed over catdog's own
(`atomic_write`); a full disk or a file size limit is one line naming the file (`writing`).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from catdog_cli.errors import CatdogError

# a write the environment refused: a full disk or quota, a file size limit (ulimit -f), a read-only file system
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


# torch's zip writer (torch.save) reports a short write as a RuntimeError with one of these, not as an OSError
ZIP_WRITER_FAILED = ("inline_container", "PytorchStreamWriter", "unexpected pos")


def _why_unwritten(folder: Path) -> str:
    """The likely reason a write came up short when the writer did not say (torch's zip writer)."""
    try:
        room = os.statvfs(folder)
        if room.f_bavail * room.f_frsize < 64 << 20:
            return os.strerror(errno.ENOSPC)
    except OSError:
        pass
    try:
        import resource  # POSIX only
    except ImportError:
        resource = None
    if resource and resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
        return f"{os.strerror(errno.EFBIG)} (the file size limit, ulimit -f)"
    return "the write came up short (a full disk?)"


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """A write the environment refuses (a full disk, a file size limit) as one line that names the file the user
    asked for, not a hidden temp file and not no file at all ("File too large"). Other errors pass unchanged."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise CatdogError(f"cannot write {path}: {exc.strerror}") from None
    except RuntimeError as exc:
        if not any(m in str(exc) for m in ZIP_WRITER_FAILED):
            raise
        raise CatdogError(f"cannot write {path}: {_why_unwritten(Path(path).parent)}") from None


def _umask() -> int:
    """The process's umask: from /proc where it is shown, else by setting it and setting it straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def numbered(name: str) -> Iterator[str]:
    """NAME, then NAME-1, NAME-2, ... before the suffix: the names a file may take when NAME is taken."""
    stem, suffix = Path(name).stem, Path(name).suffix
    yield name
    n = 1
    while True:
        yield f"{stem}-{n}{suffix}"
        n += 1


def _link_new(tmp: Path, target: Path) -> bool:
    """Give the finished file `tmp` the name `target` too, unless it is taken (False). A hard link is atomic and
    refuses an existing name, so a file is never replaced, even in a race."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # no hard links here (FAT, some network shares): create exclusively, then copy
        try:
            with open(tmp, "rb") as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst)
        except FileExistsError:
            return False
    return True


def publish_new(tmp: Path, folder: Path, name: str) -> Path:
    """Give a finished file (`tmp`, on the same file system) the first free name of `numbered(name)` in `folder`;
    nothing incomplete ever appears under a real name."""
    for candidate in numbered(name):
        target = folder / candidate
        if _link_new(tmp, target):
            os.unlink(tmp)
            return target
    raise AssertionError("numbered() never ends")


def create_new(path: Path | str, make: Callable[[Path], object], option: str) -> Path:
    """Write a file at `path` only if none is there: `make` writes a temp file beside it, which then takes the
    name without replacing anything (a file that appeared meanwhile is the user's and stays)."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CatdogError(f"{option}: cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.fchmod(fd, 0o666 & ~_umask())  # the permissions open() would give, not mkstemp's private 0600
    os.close(fd)
    try:
        with writing(path):
            make(Path(tmp))
        if not _link_new(Path(tmp), path):
            raise CatdogError(f"{path} already exists; choose a new {option} file")
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_new(folder: Path, name: str, write: Callable[[Path], object]) -> Path:
    """A new file in folder named NAME, or NAME-1, NAME-2, ... when taken; `write` fills a hidden temp file
    first, so an interrupted write never leaves a truncated file under a real name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the permissions open() would give, not mkstemp's private 0600
        os.close(fd)
        with writing(folder / name):
            write(Path(tmp))
        return publish_new(Path(tmp), folder, name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def copy_new(src: Path, folder: Path) -> Path:
    """Copy src (its bytes, times and permissions) into folder under its own name, or NAME-1, NAME-2, ..."""

    def copy(tmp: Path) -> None:
        with open(src, "rb") as f, open(tmp, "wb") as dst:
            shutil.copyfileobj(f, dst)
        shutil.copystat(src, tmp)

    return write_new(folder, src.name, copy)


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new, and a
    full disk one line naming the file (`writing`)."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # the permissions open() would give, not mkstemp's private 0600
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path | str, text: str) -> None:
    """UTF-8; a name that is not (bytes of a non-UTF-8 file name) is written escaped instead of failing the write."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8", "backslashreplace")))
