"""Where catdog keeps data and where runs go; nothing a user made is ever overwritten."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import platformdirs

from catdog_cli.errors import CatdogError


def data_root() -> Path:
    """Datasets fetched by `catdog fetch` live here; CATDOG_HOME overrides the platform default. A root that is
    a file, below a file, or that cannot be searched is refused in one line, wherever a dataset is looked up."""
    env = os.environ.get("CATDOG_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("catdog"))
    what = f"$CATDOG_HOME {root}" if env else f"the data root {root}"
    try:
        mode = os.stat(root).st_mode
    except FileNotFoundError:  # made by the first fetch
        return root
    except OSError as e:
        raise CatdogError(f"cannot use {what}: {e.strerror or e}") from None
    if not stat.S_ISDIR(mode):
        raise CatdogError(f"{what} is a file; it must be a folder")
    if not os.access(root, os.X_OK):
        raise CatdogError(f"cannot use {what}: permission denied")
    return root


def new_run_dir(parent: Path | str = "runs", prefix: str = "train") -> Path:
    """Create and return a fresh folder parent/prefix, parent/prefix2, ... (never an existing one)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = parent / (prefix if n == 1 else f"{prefix}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


def check_out_dir(out: Path | str | None) -> None:
    """Refuse a non-empty --out up front, before any work is done for it."""
    if out is not None and Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise CatdogError(f"{out} already exists and is not empty; catdog never overwrites a run (pick a new --out)")


def claim_out_dir(out: Path | str | None, prefix: str) -> Path:
    """Use the user's --out if it is new or empty, else a fresh folder under ./runs/."""
    if out is None:
        return new_run_dir("runs", prefix)
    check_out_dir(out)
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out)


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


def publish_new(tmp: Path, folder: Path, name: str) -> Path:
    """Give a finished file (`tmp`, on the same file system) the first free name of `numbered(name)` in `folder`.

    A hard link is atomic and refuses an existing name, so a file is never replaced, even in a race, and
    nothing incomplete ever appears under a real name.
    """
    names = numbered(name)
    while True:
        target = folder / next(names)
        try:
            os.link(tmp, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links here (FAT, some network shares): create exclusively, then copy
            try:
                with open(tmp, "rb") as src, open(target, "xb") as dst:
                    shutil.copyfileobj(src, dst)
            except FileExistsError:
                continue
        os.unlink(tmp)
        return target


def copy_new(src: Path, folder: Path) -> Path:
    """Copy src into folder under its own name, or NAME-1, NAME-2, ... when taken; the copy is written to a
    hidden temp file first, so an interrupted copy never leaves a truncated file under a real name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{src.name}.", suffix=".tmp", dir=folder)
    try:
        with open(src, "rb") as f, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(f, dst)
        shutil.copystat(src, tmp)
        return publish_new(Path(tmp), folder, src.name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, write: Callable[[BinaryIO], object]) -> None:
    """Write via a temp file in the same folder, fsync, then rename: a crash leaves the old file or the new."""
    path = Path(path)
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
    atomic_write(path, lambda f: f.write(text.encode()))
