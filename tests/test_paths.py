"""paths: run folders are never reused, and files are replaced atomically with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from catdog_cli.errors import CatdogError
from catdog_cli.paths import atomic_write, check_out_dir, data_root, new_run_dir, run_folder


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


def test_atomic_write_gives_the_permissions_open_would(tmp_path):
    target = tmp_path / "report.html"
    atomic_write(target, lambda f: f.write(b"<html>"))
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_new_run_dirs_count_up_and_never_reuse(tmp_path):
    first, second = new_run_dir(tmp_path, "train"), new_run_dir(tmp_path, "train")
    assert (first.name, second.name) == ("train", "train2")
    (tmp_path / "train3").mkdir()  # made by someone else meanwhile
    assert new_run_dir(tmp_path, "train").name == "train4"


def test_out_dir_must_be_new_or_empty(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with run_folder(empty, "train") as folder:
        assert folder == empty
        (empty / "best.pt").write_bytes(b"mine")
    with pytest.raises(CatdogError, match="never overwrites"):
        check_out_dir(empty)
    assert (empty / "best.pt").read_bytes() == b"mine"


def test_data_root_follows_catdog_home(tmp_path, monkeypatch):
    monkeypatch.setenv("CATDOG_HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home"


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_writer_dying_midway_leaves_the_previous_file(tmp_path: Path, error: BaseException) -> None:
    path = tmp_path / "last.pt"
    path.write_bytes(b"the previous complete checkpoint")

    def dies(f) -> None:
        f.write(b"the first half of the new one")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, dies)
    assert path.read_bytes() == b"the previous complete checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]  # no temp file left behind
