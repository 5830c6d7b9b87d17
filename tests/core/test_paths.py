"""paths: run folders are never reused and are claimed by one run; output paths are checked before any work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from catdog_cli.core.paths import (
    LOCK,
    check_folder_target,
    check_new_file,
    check_out_dir,
    check_run_name,
    data_root,
    new_run_dir,
    run_folder,
)
from catdog_cli.errors import CatdogError


def test_new_run_dirs_count_up_and_never_reuse(tmp_path):
    first, second = new_run_dir(tmp_path, "train"), new_run_dir(tmp_path, "train")
    assert (first.name, second.name) == ("train", "train2")
    (tmp_path / "train3").mkdir()  # made by someone else meanwhile
    assert new_run_dir(tmp_path, "train").name == "train4"


def test_named_runs_go_under_their_command_and_count_up_without_overwriting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with run_folder(None, "train", name="exp") as first:
        (first / "run.json").write_text("{}")
    with run_folder(None, "train", name="exp") as second:
        (second / "run.json").write_text("{}")
    with run_folder(None, "compare", name="exp") as other, run_folder(None, "train", name="exp1") as digit:
        (digit / "run.json").write_text("{}")
        assert other == Path("runs/compare/exp")
    with run_folder(None, "train", name="exp1") as digit2:
        pass
    assert (first, second, digit, digit2) == tuple(Path(f"runs/train/{n}") for n in ("exp", "exp2", "exp1", "exp1-2"))
    assert (first / "run.json").read_text() == "{}"


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "a\\b", "tab\there"])
def test_a_run_name_is_one_plain_folder_name(name):
    with pytest.raises(CatdogError, match="--name"):
        check_run_name(name)


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


# --- a run's folder is claimed before any work, by one run only ------------------------------------------------


@pytest.mark.parametrize("racers", [2, 4, 8])
@pytest.mark.parametrize("exists", [True, False], ids=["empty folder", "new folder"])
def test_of_runs_racing_for_one_out_exactly_one_gets_it(tmp_path, racers, exists):
    out = tmp_path / "out"
    if exists:
        out.mkdir()
    barrier, results = threading.Barrier(racers), []
    release = threading.Event()

    def claim() -> None:
        barrier.wait()
        try:
            with run_folder(out, "train"):
                results.append("claimed")
                release.wait(timeout=60)  # hold it while the others try
        except CatdogError as exc:
            results.append(str(exc))
            if sum(r != "claimed" for r in results) == racers - 1:  # every other racer has tried
                release.set()

    threads = [threading.Thread(target=claim) for _ in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results.count("claimed") == 1, results
    assert all("in use by another catdog run" in r or "not empty" in r for r in results if r != "claimed")


@pytest.mark.parametrize("out", ["new", "new/nested/deep"])
@pytest.mark.parametrize("error", [CatdogError("no images"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_a_run_that_fails_before_writing_leaves_no_folder(tmp_path, out, error):
    with pytest.raises(type(error)), run_folder(tmp_path / out, "train"):
        raise error
    assert os.listdir(tmp_path) == []


def test_an_existing_empty_out_is_left_as_it_was_and_a_written_one_keeps_its_files(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatdogError), run_folder(empty, "train"):
        raise CatdogError("failed early")
    assert empty.is_dir() and os.listdir(empty) == []
    with pytest.raises(CatdogError), run_folder(tmp_path / "run", "train") as folder:
        (folder / "best.pt").write_bytes(b"epoch 1")
        raise CatdogError("diverged in epoch 2")
    assert os.listdir(tmp_path / "run") == ["best.pt"]  # the lock is gone, the work is kept


def test_default_run_folder_failing_early_leaves_no_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatdogError), run_folder(None, "train") as folder:
        assert folder == Path("runs") / "train" and (folder / LOCK).is_file()
        raise CatdogError("one class")
    assert os.listdir(tmp_path) == []


def _places(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "file"
    a_file.write_text("the user's")
    return {
        "below a file": a_file / "x",
        "a file": a_file,
        "under /proc": Path("/proc/catdog-test/x"),
        "missing parent": tmp_path / "missing" / "x",
    }


@pytest.mark.parametrize("place", ["below a file", "a file", "under /proc"])
def test_an_out_nothing_can_be_created_in_is_one_line(tmp_path, place):
    target = _places(tmp_path)[place]
    with pytest.raises(CatdogError), run_folder(target, "train"):
        pytest.fail("claimed")
    with pytest.raises(CatdogError):
        check_folder_target(target, "--sort-into")
    assert (tmp_path / "file").read_text() == "the user's"


@pytest.mark.parametrize("place", ["below a file", "a file", "under /proc", "missing parent", "a folder"])
def test_a_new_file_target_is_checked_before_any_work(tmp_path, place):
    target = tmp_path if place == "a folder" else _places(tmp_path)[place]
    with pytest.raises(CatdogError, match="--report"):
        check_new_file(target, "--report")


# --- issue 25: no stale lock ------------------------------------------------------------------------------------


def _dead_pid() -> int:
    """The PID of a process that has ended (and been reaped): what a lock of a run killed by -9 holds."""
    done = subprocess.Popen([sys.executable, "-c", ""])
    done.wait()
    return done.pid


@pytest.mark.parametrize("content", ["{pid}\n", "{pid} {host}\n"], ids=["older catdog", "this machine"])
@pytest.mark.parametrize("reuse", [False, True], ids=["new run", "resume"])
def test_a_lock_whose_process_is_gone_is_taken_over(tmp_path, content, reuse):
    """kill -9, or SIGTERM while a run starts up, leaves the lock: the next run checks its PID and goes on."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK).write_text(content.format(pid=_dead_pid(), host=socket.gethostname()))
    with run_folder(out, "train", reuse=reuse) as folder:
        assert (folder / LOCK).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        assert sorted(os.listdir(folder)) == [LOCK]  # nothing set aside left over
    assert not (out / LOCK).exists()


@pytest.mark.parametrize(
    "content",
    ["{me} {host}\n", "{me}\n", "{dead} another-machine\n", "not a pid\n", ""],
    ids=["running", "running, older catdog", "another machine's", "garbage", "empty (being written)"],
)
def test_a_lock_that_may_be_held_is_still_refused(tmp_path, content):
    out = tmp_path / "run"
    out.mkdir()
    written = content.format(me=os.getpid(), dead=_dead_pid(), host=socket.gethostname())
    (out / LOCK).write_text(written)
    for reuse in (False, True):
        with pytest.raises(CatdogError, match="is in use by another catdog run"), run_folder(out, "train", reuse=reuse):
            pass
    assert os.listdir(out) == [LOCK] and (out / LOCK).read_text() == written  # left as it was


def test_without_platformdirs_everything_imports_and_the_data_root_falls_back_to_xdg(tmp_path):
    """A bare GPU box (`pip install --no-deps`) may lack platformdirs: it is imported only when the default data
    root is asked for, and its absence falls back to XDG's folder."""
    probe = (
        "import sys; sys.modules['platformdirs'] = None\n"  # `import platformdirs` now raises ImportError
        "import catdog_cli.cli.app, catdog_cli.training.compare\n"
        "from catdog_cli.core.paths import data_root\n"
        "print(data_root())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CATDOG_HOME"} | {
        "XDG_DATA_HOME": str(tmp_path / "xdg"),
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "xdg" / "catdog")


@pytest.mark.parametrize("given", ["", ".", "./"])
def test_an_empty_output_file_name_is_refused_as_empty(tmp_path, monkeypatch, given):
    """`export --out ""` said ". already exists": true of the folder an empty path reads as, and no help."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatdogError, match=r"^--out is empty \(or \.\): give the name of a file to write$"):
        check_new_file(Path(given), "--out")
    with pytest.raises(CatdogError, match=rf"^--csv {tmp_path} is a folder; give the name of a file to write$"):
        check_new_file(tmp_path, "--csv")
    assert os.listdir(tmp_path) == []
