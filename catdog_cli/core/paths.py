"""Where catdog keeps data and where runs go, and the checks an output path passes before any work (files.py
writes the files); nothing a user made is ever overwritten."""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from catdog_cli.core.defaults import KNOWN_DATASETS
from catdog_cli.core.formatting import did_you_mean
from catdog_cli.errors import CatdogError


def default_data_root() -> Path:
    """platformdirs' folder for catdog's data, imported only when asked: a box without platformdirs (a bare GPU
    machine, `pip install --no-deps`) still runs everything else, and falls back to the XDG folder
    ($XDG_DATA_HOME/catdog, else ~/.local/share/catdog), which is platformdirs' own answer on Linux."""
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share") / "catdog"
    return Path(platformdirs.user_data_dir("catdog"))


def data_root() -> Path:
    """Datasets fetched by `catdog fetch` live here; CATDOG_HOME overrides the platform default. A root that is
    a file, below a file, or that cannot be searched is refused in one line, wherever a dataset is looked up."""
    env = os.environ.get("CATDOG_HOME")
    root = Path(env).expanduser() if env else default_data_root()
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


def resolve_data(data: str | Path) -> Path:
    """A folder path, or the name of a dataset fetched into the data root (a folder of that name here comes first:
    `data_note` says so when both exist); one that cannot be read is refused here, before anything is loaded."""
    path = Path(data).expanduser()
    if not path.is_dir():
        fetched = data_root() / str(data)
        if fetched.is_dir():
            path = fetched
        elif path.exists():
            raise CatdogError(f"{path.absolute()} is a file, not a folder of images")
        else:
            raise CatdogError(f"no dataset at {data!r}: {_not_found(str(data))}")
    try:
        with os.scandir(path):
            pass
    except OSError as exc:
        raise CatdogError(f"cannot read {path.absolute()}: {exc.strerror or exc}") from None
    return path


def _not_found(data: str) -> str:
    """Why a --data that is neither a folder nor a fetched dataset was refused, and what was probably meant."""
    root = data_root()
    where = f"no folder {Path(data).absolute()}, and nothing fetched as {data!r} into {root}"
    if os.sep in data or (os.altsep and os.altsep in data):
        return f"{where} (a path that does not exist)"
    fetched = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if data in KNOWN_DATASETS:
        return f"{where} (`catdog fetch {data}`; offline, `catdog fetch {data} --from ARCHIVE`)"
    meant = did_you_mean(data, list(dict.fromkeys([*fetched, *KNOWN_DATASETS])))
    if meant:
        return f"{where}; {meant.strip()}"
    return f"{where} (known datasets: {', '.join(KNOWN_DATASETS)}, for `catdog fetch NAME`)"


def data_note(data: str | Path, path: Path) -> str | None:
    """When a bare name was read as a folder here although a fetched dataset has the same name (or the other way
    round): which one was read, and how to pick the other."""
    if isinstance(data, Path) or os.sep in data or not path.is_dir():
        return None
    try:
        fetched = data_root() / data
    except CatdogError:
        return None
    local = Path(data)
    if path == local and fetched.is_dir():
        return f"--data {data} read the folder {local.absolute()}; the fetched dataset is {fetched} (pass that path)"
    return None


def _mkdirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the folders it made (deepest last); an OSError as one line."""
    made = []
    for path in reversed([folder, *folder.parents]):
        if path.is_dir():
            continue
        try:
            path.mkdir()
        except FileExistsError:
            if not path.is_dir():
                raise CatdogError(f"cannot create {folder}: {path} is a file, not a folder") from None
            continue  # made by someone else meanwhile
        except OSError as exc:
            raise CatdogError(f"cannot create {folder}: {exc.strerror or exc}") from None
        made.append(path)
    return made


def new_run_dir(parent: Path | str = "runs", prefix: str = "train") -> Path:
    """Create and return a fresh folder parent/prefix, parent/prefix2, ... (never an existing one); a prefix that
    ends in a digit counts on after a dash (exp1, exp1-2), so that two names never read alike."""
    parent = Path(parent)
    _mkdirs(parent)
    sep = "-" if prefix[-1:].isdigit() else ""
    n = 1
    while True:
        path = parent / (prefix if n == 1 else f"{prefix}{sep}{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
        except OSError as exc:
            raise CatdogError(f"cannot create {path}: {exc.strerror or exc}") from None


def check_out_dir(out: Path | str | None) -> None:
    """Refuse a non-empty --out up front, before any work is done for it."""
    if out is None or not Path(out).exists():
        return
    if not Path(out).is_dir():
        raise CatdogError(f"{out} is a file, not a folder; pick a new --out")
    names = _names(Path(out))
    if LOCK in names and not _stale(Path(out) / LOCK):
        raise CatdogError(f"{out} is in use by another catdog run; if none is running, delete {Path(out) / LOCK}")
    if set(names) - {LOCK}:  # a stale lock alone (its run was killed) is taken over by the next run
        raise CatdogError(f"{out} already exists and is not empty; catdog never overwrites a run (pick a new --out)")


def _names(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError as exc:
        raise CatdogError(f"cannot read {folder}: {exc.strerror or exc}") from None


LOCK = ".catdog-lock"  # in a folder a run is writing to, for as long as it runs


def _lock(folder: Path) -> Path:
    """Create folder/LOCK exclusively (O_EXCL is atomic): of two runs started into one folder, one gets it. A lock
    whose process is gone (kill -9) is taken over, not left for the user to delete."""
    lock = folder / LOCK
    in_use = CatdogError(f"{folder} is in use by another catdog run; if none is running, delete {lock}")
    for _ in range(3):  # a stale lock removed, then created again: another run may win that race
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _remove_stale(lock):
                continue
            raise in_use from None
        except OSError as exc:
            raise CatdogError(f"cannot write in {folder}: {exc.strerror or exc}") from None
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {socket.gethostname()}\n")
        except BaseException:  # Ctrl-C or SIGTERM now: an empty lock would read as one being written, held
            lock.unlink(missing_ok=True)
            raise
        return lock
    raise in_use


def _stale(lock: Path) -> bool:
    """Whether a lock's run is gone: its process no longer exists on this machine. A lock of another machine (a
    shared file system), or one that cannot be read, counts as held: only a run known dead is taken over."""
    try:
        pid_text, _, host = lock.read_text().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return False
    if (host.strip() and host.strip() != socket.gethostname()) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: alive, another user's
        return False
    return False


def _remove_stale(lock: Path) -> bool:
    """Remove a stale lock (True: try to create it again). It is first moved aside under a name of this process's
    own and checked again there, so that a live lock another run made meanwhile is put back, never removed."""
    if not _stale(lock):
        return False
    aside = lock.with_name(f"{LOCK}.stale.{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:  # another run removed it first
        return True
    if not _stale(aside):
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
        aside.unlink()
        return False
    aside.unlink()
    return True


def check_run_name(name: str) -> str:
    """--name: one folder name (runs/<command>/NAME), not a path."""
    if not name or name.startswith(".") or "/" in name or "\\" in name or not name.isprintable():
        raise CatdogError(f"--name {name!r}: give a plain folder name (no slashes, not hidden), or use --out PATH")
    return name


@contextmanager
def run_folder(out: Path | str | None, prefix: str, reuse: bool = False, name: str | None = None) -> Iterator[Path]:
    """The folder a run writes into, claimed before any work and held until the run ends.

    `out` None: a new folder runs/PREFIX, runs/PREFIX2, ... (`name`: runs/PREFIX/NAME, runs/PREFIX/NAME2, ...);
    else the user's folder, which must be new or empty (with `reuse`, it may hold the run's own earlier files:
    resume, compare). The folder is claimed with a lock file made exclusively, so two runs started at once into
    one folder cannot both run. A run that fails before writing anything leaves nothing behind: the folders it
    made are removed again.
    """
    if out is None:
        parent = Path("runs") / prefix if name is not None else Path("runs")
        made = _mkdirs(parent)
        folder = new_run_dir(parent, check_run_name(name) if name is not None else prefix)
        made.append(folder)
    else:
        folder = Path(out)
        if not reuse:
            check_out_dir(folder)
        made = _mkdirs(folder)
    try:
        lock = _lock(folder)
    except BaseException:  # in use, or Ctrl-C or SIGTERM while claiming it
        _remove_empty(made)
        raise
    try:
        yield folder
    finally:
        lock.unlink(missing_ok=True)
        _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):
        try:
            folder.rmdir()  # only an empty folder goes: the run wrote nothing in it
        except OSError:
            return


def _probe(folder: Path, option: str) -> None:
    """Whether a file can be created in `folder` (read-only file systems, /proc and permissions all answer)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".catdog-probe-", dir=folder)
    except OSError as exc:
        raise CatdogError(f"{option}: cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def check_file_name(path: Path | str, option: str) -> None:
    """An output file's option that names a folder names no file: an empty value too (`--out ""` reads as `.`)."""
    path = Path(path)
    if path == Path("."):
        raise CatdogError(f"{option} is empty (or .): give the name of a file to write")
    if path.is_dir():
        raise CatdogError(f"{option} {path} is a folder; give the name of a file to write")


def check_new_file(path: Path | str, option: str) -> Path:
    """Refuse, before any work, an output file that could not be written new: a folder or nothing (`check_file_name`),
    one that exists (catdog never overwrites), one in a folder that is missing, or one where nothing can be
    written."""
    path = Path(path)
    check_file_name(path, option)
    if path.exists() or path.is_symlink():
        raise CatdogError(f"{path} already exists; choose a new {option} file")
    if not path.parent.is_dir():
        raise CatdogError(f"{option} {path}: the folder {path.parent} does not exist")
    _probe(path.parent, option)
    return path


def check_not_an_input(
    output: Path | str, inputs: list[Path], option: str, read_in_folder: Callable[[Path], bool] = lambda p: True
) -> None:
    """Refuse, before any work, an output file that is one of the command's own inputs, --overwrite or not: the
    same file (a link or another name of it too), or a file a given folder holds that the command would read."""
    output = Path(output)
    if not output.exists():
        return
    for given in inputs:
        same = (
            output.resolve().is_relative_to(given.resolve()) and read_in_folder(output)
            if given.is_dir()
            else given.exists() and os.path.samefile(given, output)
        )
        if same:
            raise CatdogError(f"{option} {output} is an input of this command ({given}); choose another file")


def check_folder_target(path: Path | str, option: str) -> Path:
    """Refuse, before any work, an output folder that could not be made or written: a file, a path below a file,
    a read-only place."""
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise CatdogError(
            f"{option} {path} is a file, not a folder"
            if existing == path
            else f"{option} {path}: {existing} is a file, not a folder"
        )
    _probe(existing, option)
    return path
