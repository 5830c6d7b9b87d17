"""Writing files: a crash or a full disk leaves the previous file or none, never a half-written one under a real
name; nothing a user made is replaced; every file gets the permissions open() would give."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

import pytest

from catdog_cli.core.files import atomic_write, copy_new, create_new, write_new
from catdog_cli.errors import CatdogError


def test_atomic_write_leaves_only_the_file(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(target, lambda f: f.write(b"new"))
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failed_atomic_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")

    def half_then_crash(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


@pytest.mark.parametrize("writer", ["atomic_write", "create_new", "write_new"])
def test_every_writer_gives_the_permissions_open_would(tmp_path, writer):
    """A --csv (create_new) was 0600 while reports were 0644: every file catdog makes gets the user's umask."""
    target = tmp_path / "report.html"
    if writer == "atomic_write":
        atomic_write(target, lambda f: f.write(b"<html>"))
    elif writer == "create_new":
        create_new(target, lambda tmp: tmp.write_text("path,label\n"), "--csv")
    else:
        write_new(tmp_path, target.name, lambda tmp: tmp.write_bytes(b"x"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),  # torch's zip writer
        KeyboardInterrupt(),
    ],
    ids=["ENOSPC", "torch zip writer", "Ctrl-C"],
)
def test_a_writer_dying_midway_leaves_the_previous_file(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous complete checkpoint")

    def dies(f) -> None:
        f.write(b"the first half of the new one")
        raise error

    with pytest.raises(KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else CatdogError):
        atomic_write(path, dies)
    assert path.read_bytes() == b"the previous complete checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind


def test_create_new_never_replaces_a_file_that_appeared_meanwhile(tmp_path):
    target = tmp_path / "report.html"

    def make(tmp: Path) -> None:
        tmp.write_text("ours")
        target.write_text("the user's, written while we worked")

    with pytest.raises(CatdogError, match="already exists"):
        create_new(target, make, "--report")
    assert target.read_text() == "the user's, written while we worked"
    assert os.listdir(tmp_path) == ["report.html"]  # no temp file left


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["interrupt", "disk full"]
)
def test_an_interrupted_copy_leaves_no_file_under_a_real_name(tmp_path, monkeypatch, error):
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"x" * 100_000)
    dest = tmp_path / "sorted"
    dest.mkdir()
    real = shutil.copyfileobj

    def half_then_fail(fsrc, fdst, *args):
        fdst.write(fsrc.read(50_000))
        raise error

    monkeypatch.setattr(shutil, "copyfileobj", half_then_fail)
    with pytest.raises(KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else CatdogError):
        copy_new(src, dest)
    assert os.listdir(dest) == []  # neither a truncated photo.jpg nor a temp file
    monkeypatch.setattr(shutil, "copyfileobj", real)
    assert copy_new(src, dest) == dest / "photo.jpg"  # the re-run takes the real name, not photo-1.jpg
    assert (dest / "photo.jpg").read_bytes() == src.read_bytes()


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (OSError(errno.EFBIG, "File too large"), "File too large"),  # no file name of its own
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded"),
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), None),
    ],
    ids=["ENOSPC", "EFBIG", "EDQUOT", "torch zip writer"],
)
@pytest.mark.parametrize("writer", ["atomic_write", "write_new", "create_new"])
def test_a_write_the_disk_refuses_is_one_line_naming_the_users_file(tmp_path, error, reason, writer):
    """Not the hidden temp file's name, not no name at all, not torch's RuntimeError: the file the user asked for;
    and no temp file is left."""

    def fails(*_: object) -> None:
        raise error

    target = tmp_path / "out.bin"
    with pytest.raises(CatdogError) as caught:
        if writer == "atomic_write":
            atomic_write(target, fails)
        elif writer == "write_new":
            write_new(tmp_path, "out.bin", fails)
        else:
            create_new(target, fails, "--csv")
    assert str(caught.value).startswith(f"cannot write {target}: ")
    if reason:
        assert str(caught.value) == f"cannot write {target}: {reason}"
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "error", [PermissionError(errno.EACCES, "Permission denied"), RuntimeError("a bug"), ValueError("a bug")]
)
def test_other_errors_while_writing_pass_unchanged(tmp_path, error):
    def fails(_: object) -> None:
        raise error

    with pytest.raises(type(error)):
        atomic_write(tmp_path / "out.bin", fails)
    assert os.listdir(tmp_path) == []
