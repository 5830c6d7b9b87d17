"""SIGTERM (`kill`, a batch scheduler's preemption) is Ctrl-C for every command: each cleans up after itself and
exits with 130. Left to its default, SIGTERM ended predict and export on the spot, leaving their hidden temp files,
and train during its start-up, leaving its lock.

Each test runs the real CLI in a subprocess with one function made to wait, at the moment a temp file exists (or
while train decodes), until a signal comes: the process says so on stderr (a pipe the test reads), the test sends
a real SIGTERM and looks at what is left. No sleeps; a deadline only for a hang.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CLASS_COLORS, TINY_CLI, labeled_folder, make_image

from catdog_cli.core.paths import LOCK

ROOT = Path(__file__).resolve().parents[2]
READY = "catdog-test: waiting for a signal\n"
# runs the CLI with MODULE.NAME made to wait first: it says so on stderr, then waits on a pipe nobody writes to.
# Not a blocking read: the kernel may hand SIGTERM to one of torch's threads, which leaves the main thread's read
# uninterrupted and Python's handler never run (a hang seen once in the suite); the wakeup fd wakes the select.
WAITING = f"""
import importlib, os, select, signal, sys
module_name, name, *args = sys.argv[1:]
module = importlib.import_module(module_name)
real = getattr(module, name)

def waiting(*a, **k):
    woken, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    sys.stderr.write({READY!r})
    sys.stderr.flush()
    select.select([sys.stdin, woken], [], [])  # Python runs the signal's handler as soon as this returns
    return real(*a, **k)

setattr(module, name, waiting)
sys.argv = ["catdog", *args]
from catdog_cli.cli.app import main
main()
"""


def terminated_while_waiting(
    cwd: Path, where: str, *args: object, meanwhile: Callable[[], None] = lambda: None
) -> tuple[int, str]:
    """Run `catdog ARGS` with `where` (module.function) waiting; once it waits, call `meanwhile` (it looks at what
    is there at that moment), then SIGTERM it: (exit code, stderr)."""
    module, name = where.rsplit(".", 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CATDOG_HOME": str(cwd / "home"), "COLUMNS": "1000"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WAITING, module, name, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    said = []
    while (line := lines.get(timeout=600)) != READY:  # a deadline for a hang, not a timing
        if line is None:
            proc.wait()
            pytest.fail(f"{args[0]} ended with {proc.returncode} before it waited: {''.join(said)}")
        said.append(line)
    meanwhile()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    while (line := lines.get(timeout=60)) is not None:
        said.append(line)
    proc.stdin.close()
    return code, "".join(said)


def assert_interrupted(code: int, stderr: str) -> None:
    assert code == 130, stderr[-3000:]  # not -15: the process was not simply killed
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    for i in range(3):
        make_image(tmp_path / "photos" / f"{i}.png", CLASS_COLORS[i % 2])
    return tmp_path / "photos"


def test_predict_terminated_while_writing_its_csv_leaves_no_temp_file(frozen_run, tmp_path, photos):
    out = tmp_path / "out"
    out.mkdir()
    best = frozen_run["out"] / "best.pt"
    code, stderr = terminated_while_waiting(
        tmp_path, "catdog_cli.core.files._link_new", "predict", best, photos, "--device", "cpu", "--csv", out / "p.csv"
    )
    assert_interrupted(code, stderr)
    assert files_under(out) == []  # neither the CSV nor its hidden .p.csv.*.tmp


def test_predict_terminated_while_sorting_leaves_no_temp_file(frozen_run, tmp_path, photos):
    best = frozen_run["out"] / "best.pt"
    sorted_ = tmp_path / "sorted"
    code, stderr = terminated_while_waiting(
        tmp_path, "catdog_cli.core.files._link_new", "predict", best, photos, "--device", "cpu", "--sort-into", sorted_
    )
    assert_interrupted(code, stderr)
    assert files_under(sorted_) == []  # the copy in progress was a hidden temp file: gone
    assert files_under(photos) == ["0.png", "1.png", "2.png"]


def test_export_terminated_before_its_file_takes_its_name_leaves_no_temp_folder(frozen_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    best = frozen_run["out"] / "best.pt"
    code, stderr = terminated_while_waiting(
        tmp_path,
        "catdog_cli.core.files._link_new",
        "export",
        best,
        "--format",
        "torchscript",
        "--out",
        out / "m.torchscript",
    )
    assert_interrupted(code, stderr)
    assert os.listdir(out) == []  # the hidden .m.torchscript.*.tmp folder is gone too


@pytest.mark.parametrize(
    ("where", "strategy"),
    [("open_sources", "finetune"), ("cache_features", "freeze")],
    ids=["decoding", "caching features"],
)
def test_train_terminated_in_its_start_up_leaves_no_lock_and_no_folder(tmp_path, where, strategy):
    """Decoding (or freeze's feature cache) can take minutes, and schedulers preempt with SIGTERM: the run's folder
    was left with its lock, which the next run had to take over; now the run removes both, as Ctrl-C does."""
    data = labeled_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    code, stderr = terminated_while_waiting(
        tmp_path,
        f"catdog_cli.training.setup.{where}",
        "train",
        "--data",
        data,
        *TINY_CLI,
        "--strategy",
        strategy,
        "--epochs",
        "1",
        "--out",
        out,
    )
    assert_interrupted(code, stderr)
    assert not out.exists()  # made for the run, empty: removed, its lock first
    assert sorted(os.listdir(tmp_path)) == ["data"]  # nothing else anywhere: no runs/, no temp file


def test_train_terminated_while_it_writes_its_lock_leaves_none(tmp_path):
    """The lock's content (PID and host) is written just after the file is made: a signal in between left an empty
    lock, which reads as one being written (held), and the folder refused every run until the user deleted it."""
    data = labeled_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    seen: list[str] = []
    code, stderr = terminated_while_waiting(
        tmp_path,
        "socket.gethostname",  # what the lock's line asks for, the file made and still empty
        "train",
        "--data",
        data,
        *TINY_CLI,
        "--epochs",
        "1",
        "--out",
        out,
        meanwhile=lambda: seen.append((out / LOCK).read_text()),
    )
    assert seen == [""]
    assert_interrupted(code, stderr)
    assert sorted(os.listdir(tmp_path)) == ["data"]
