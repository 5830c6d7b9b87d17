"""Interrupted runs: SIGINT/SIGTERM save last.pt, kill -9 leaves only complete checkpoints, and
`train --resume OUT` finishes the same run (same options, same classes, every step exactly once)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import CLASS_COLORS, TINY_CLI, catdog, error_line, labeled_folder, make_image, ok_json, snapshot

from catdog_cli.cli.progress import RichEvents
from catdog_cli.core.paths import LOCK, run_folder
from catdog_cli.models import checkpoints
from catdog_cli.training.schedule import warmup_cosine


@contextmanager
def sigint_at(epoch: int, step: int) -> Iterator[None]:
    """A real SIGINT at `step` of `epoch` of the CLI run inside, in-process: the engine's handler catches it, so
    the run stops after that step and saves last.pt."""
    progress = {"task": "", "steps": 0}

    def task(self, description: str, total: int, batch: int = 1) -> None:
        progress.update(task=description, steps=0)

    def advance(self, n: int = 1, **info: float) -> None:
        progress["steps"] += n
        if progress["task"].startswith(f"epoch {epoch}/") and progress["steps"] == step:
            signal.raise_signal(signal.SIGINT)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(RichEvents, "task", task)
        mp.setattr(RichEvents, "advance", advance)
        yield


def interrupt_at(tmp: Path, epoch: int, step: int) -> Path:
    """A 2-epoch run (6 steps each) stopped by SIGINT at `step` of `epoch`. Returns the run folder."""
    data = labeled_folder(tmp / "data")
    with sigint_at(epoch, step):
        result = catdog("train", "--data", data, *TINY_CLI, "--epochs", "2", "--batch-size", "2", "--out", tmp / "run")
    assert result.exit_code == 130
    assert f"interrupted: saved {tmp / 'run' / 'last.pt'}" in result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return interrupt_at(tmp_path_factory.mktemp("interrupted"), epoch=2, step=3)


def assert_every_step_taken_once(out: Path, epochs: int, steps_per_epoch: int) -> None:
    """The resumed run's scheduler and optimizer went on from where they stopped: not restarted, nothing redone."""
    last = checkpoints.load(out / "last.pt")
    assert last["scheduler"]["last_epoch"] == epochs * steps_per_epoch
    assert all(s["step"].item() == epochs * steps_per_epoch for s in last["optimizer"]["state"].values())


def test_resume_mid_epoch_continues_from_the_next_step(tmp_path: Path) -> None:
    out = interrupt_at(tmp_path, epoch=2, step=3)
    state = checkpoints.load(out / "last.pt")["state"]
    assert (state["epoch"], state["step"], len(state["history"])) == (1, 3, 1)
    done = ok_json(catdog("train", "--resume", out, "--device", "cpu", "--json"))
    assert not done["interrupted"] and done["epochs"] == 2 and len(done["history"]) == 2
    assert_every_step_taken_once(out, epochs=2, steps_per_epoch=6)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ("--backbone", "resnet18"),
            "--backbone resnet18 differs from the run being resumed (squeezenet1_1); a resumed "
            "run keeps its options (only --device, --precision, --workers, --cache-gib, --compile "
            "may change)",
        ),
        (("--epochs", "1"), "--epochs 1 is fewer than the run being resumed (2); a run can be extended, not shortened"),
        (("--lr", "0.5"), "--lr 0.5 differs from the run being resumed (0.0001)"),  # the lr it really used
        (("--out", "elsewhere"), "--out elsewhere: a resumed run continues in its own folder"),
    ],
    ids=["backbone", "epochs", "lr", "out"],
)
def test_resume_with_other_options_is_refused_before_any_work(
    interrupted: Path, options: tuple[str, ...], message: str
) -> None:
    before = snapshot(interrupted)
    assert message in error_line(catdog("train", "--resume", interrupted, *options))
    assert snapshot(interrupted) == before


def test_resume_refuses_data_whose_classes_changed(interrupted: Path, tmp_path: Path) -> None:
    data = Path(checkpoints.load(interrupted / "last.pt")["data"])
    shutil.move(data / "dog", tmp_path / "dog")
    try:
        before = snapshot(interrupted)
        line = error_line(catdog("train", "--resume", interrupted))
    finally:
        shutil.move(tmp_path / "dog", data / "dog")
    assert line == (
        f"error: the classes in {data} changed since the run started (no training images of dog now); "
        "start a new run instead"
    )
    assert snapshot(interrupted) == before


def test_resume_follows_its_data_moved_and_refuses_other_data(tmp_path: Path) -> None:
    """The split is recorded relative to the data root: a run whose folder moved (or went to another machine)
    resumes with --data NEWPLACE; other data is still refused, and a gone folder says how to point at it."""
    out = interrupt_at(tmp_path, epoch=2, step=3)
    data = Path(checkpoints.load(out / "last.pt")["data"])
    moved = tmp_path / "moved" / "data"
    shutil.move(data, moved)
    before = snapshot(out)
    assert error_line(catdog("train", "--resume", out)) == (
        f"error: the data this run trained on ({data}) is not there: if it moved (or this is another machine), "
        "pass --data with the folder that holds it now"
    )
    other = tmp_path / "other"
    for k, name in enumerate(("cat", "dog")):
        for i in range(8):
            make_image(other / name / f"other{i}.png", CLASS_COLORS[k])
    assert error_line(catdog("train", "--resume", out, "--data", other)) == (
        f"error: --data {other} differs from the run being resumed ({data}) and does not hold its recorded split; "
        "a resumed run keeps its data (moved or copied is fine)"
    )
    assert snapshot(out) == before
    done = ok_json(catdog("train", "--resume", out, "--data", moved, "--device", "cpu", "--json"))
    assert not done["interrupted"] and done["epochs"] == 2
    assert_every_step_taken_once(out, epochs=2, steps_per_epoch=6)
    assert checkpoints.load(out / "last.pt")["data"] == str(moved.resolve())


def test_resume_needs_a_last_checkpoint_and_an_unfinished_run(tmp_path: Path) -> None:
    line = error_line(catdog("train", "--resume", tmp_path))
    assert line == f"error: nothing to resume in {tmp_path}: it has no last.pt"
    run = tmp_path / "run"
    ok_json(
        catdog(
            "train",
            "--data",
            labeled_folder(tmp_path / "data", per_class=4),
            *TINY_CLI,
            "--epochs",
            "1",
            "--out",
            run,
            "--json",
        )
    )
    line = error_line(catdog("train", "--resume", run))
    assert line == f"error: {run} already ran all 1 epoch(s); to train it longer, pass --epochs N (more than 1)"


def test_more_epochs_extend_a_finished_run_with_a_restarted_schedule(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data"), tmp_path / "run"
    first = ok_json(
        catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--batch-size", "2", "--out", out, "--json")
    )
    result = catdog("train", "--resume", out, "--epochs", "3", "--json")
    done = ok_json(result)
    assert (
        f"extending {out} from 1 to 3 epochs: the learning-rate schedule restarts (warm-up, cosine) for the added steps"
    ) in " ".join(result.stderr.split())
    assert done["epochs"] == 3 and [h["epoch"] for h in done["history"]] == [1, 2, 3]
    assert done["history"][0] == first["history"][0]
    # 6 steps per epoch: the first schedule ended at 0; a new one over the 12 added steps (1 warm-up step)
    base = first["config"]["lr"]
    assert [h["lr"] for h in done["history"]] == pytest.approx([0.0, base * warmup_cosine(12, 1)(6), 0.0])
    last = checkpoints.load(out / "last.pt")
    assert last["state"]["schedule_from"] == 6 and last["scheduler"]["last_epoch"] == 12
    assert all(s["step"].item() == 3 * 6 for s in last["optimizer"]["state"].values())  # Adam's state went on


def test_an_early_stopped_run_is_finished_unless_more_epochs_extend_it(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data"), tmp_path / "run"
    ok_json(
        catdog(
            "train",
            "--data",
            data,
            *TINY_CLI,
            "--epochs",
            "3",
            "--batch-size",
            "2",
            "--patience",
            "1",
            "--out",
            out,
            "--json",
        )
    )
    last = torch.load(out / "last.pt", weights_only=True)  # as --patience leaves it after stopping at epoch 2
    last["state"] |= {
        "epoch": 2,
        "history": last["state"]["history"][:2],
        "best_epoch": 1,
        "ended": "early stopping: no better val accuracy in the 1 epoch(s) after epoch 1",
    }
    torch.save(last, out / "last.pt")
    line = error_line(catdog("train", "--resume", out))
    assert line == (
        f"error: {out} already finished (early stopping: no better val accuracy in the 1 epoch(s) after "
        "epoch 1); to train it longer, pass --epochs N (more than 3)"
    )
    done = ok_json(catdog("train", "--resume", out, "--epochs", "5", "--patience", "1", "--json"))
    assert [h["epoch"] for h in done["history"]][:3] == [1, 2, 3]  # it went on past where it had stopped


def test_an_extension_stopped_again_resumes_on_its_own_schedule(tmp_path: Path) -> None:
    data = labeled_folder(tmp_path / "data")
    for name in ("straight", "stopped"):
        ok_json(
            catdog(
                "train",
                "--data",
                data,
                *TINY_CLI,
                "--epochs",
                "1",
                "--batch-size",
                "2",
                "--out",
                tmp_path / name,
                "--json",
            )
        )
    straight = ok_json(catdog("train", "--resume", tmp_path / "straight", "--epochs", "3", "--json"))
    with sigint_at(epoch=2, step=3):
        assert catdog("train", "--resume", tmp_path / "stopped", "--epochs", "3").exit_code == 130
    again = ok_json(catdog("train", "--resume", tmp_path / "stopped", "--json"))
    assert [h["lr"] for h in again["history"]] == pytest.approx([h["lr"] for h in straight["history"]])
    last = checkpoints.load(tmp_path / "stopped" / "last.pt")
    assert last["scheduler"]["last_epoch"] == 12  # the restarted schedule's steps, each taken once
    assert all(s["step"].item() == 3 * 6 for s in last["optimizer"]["state"].values())


# --- signals and kill -9, in a real process ------------------------------------------------------------------


SIGNAL_RUN = ("--epochs", "4", "--batch-size", "2")  # 16 steps per epoch: a signal lands mid-run


def start_training(data: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "CATDOG_HOME": str(out.parent / "home")}
    cmd = [
        sys.executable,
        "-m",
        "catdog_cli",
        "train",
        "--data",
        str(data),
        *TINY_CLI,
        *SIGNAL_RUN,
        "--out",
        str(out),
        "--json",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=out.parent)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, seconds: float = 180) -> None:
    """Poll (bounded) until `condition`; fail with the run's output if it ends first."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"train ended early with {proc.returncode}: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("train made no progress before the deadline")
        time.sleep(0.002)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_last_and_resume_finishes_the_same_run(tmp_path: Path, signum: int) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=20), tmp_path / "run"
    proc = start_training(data, out)
    wait_for(lambda: (out / "last.pt").exists(), proc)  # epoch 1 is done: the engine's handler is installed
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    note = f"interrupted: saved {out / 'last.pt'}; continue with `catdog train --resume {out}`"
    assert note in " ".join(stderr.split())  # a narrow console may wrap it
    stopped = json.loads(stdout)
    assert stopped["interrupted"] and 1 <= stopped["epochs"] < 4
    state = checkpoints.load(out / "last.pt")["state"]
    assert state["epoch"] == stopped["epochs"] and len(state["history"]) == state["epoch"]

    # the same command again with --resume (typed options agree; --device may always be given)
    done = ok_json(catdog("train", "--resume", out, "--data", data, *TINY_CLI, *SIGNAL_RUN, "--json"))
    assert not done["interrupted"]
    assert done["epochs"] == 4 and [h["epoch"] for h in done["history"]] == [1, 2, 3, 4]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + 4
    assert_every_step_taken_once(out, epochs=4, steps_per_epoch=16)
    checkpoints.load(out / "best.pt")


def test_kill_9_leaves_only_complete_checkpoints(tmp_path: Path) -> None:
    data, out = labeled_folder(tmp_path / "data", per_class=20), tmp_path / "run"
    proc = start_training(data, out)
    wait_for(lambda: (out / "last.pt").exists(), proc)
    # the next checkpoint write shows as a temp file: kill the writer while it is there, if we catch it
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline and not any(p.suffix == ".tmp" for p in out.iterdir()):
        time.sleep(0.001)
    proc.kill()
    proc.communicate(timeout=60)
    saved = sorted(out.glob("*.pt"))
    assert out / "last.pt" in saved
    for path in saved:
        ckpt = checkpoints.load(path)
        assert ckpt["classes"] == ["cat", "dog"]
    assert all(p.name.startswith(".") for p in out.iterdir() if p.suffix == ".tmp")  # never taken for a checkpoint


# --- a resumed run keeps its split, and loads what a newer catdog wrote --------------------------------------


def test_resume_keeps_the_recorded_split_whatever_changed_in_the_folder(tmp_path: Path) -> None:
    out = interrupt_at(tmp_path, epoch=2, step=3)
    recorded = checkpoints.load(out / "last.pt")["split"]
    data = tmp_path / "data"
    for name in ("0new.png", "img3b.png"):  # sort among the old names: a re-derived split would reshuffle
        (data / "cat" / name).write_bytes((data / "cat" / "img0.png").read_bytes())
    (data / recorded["train"][0]).unlink()
    result = catdog("train", "--resume", out, "--json")
    done = ok_json(result)
    assert done["split"]["val"] == recorded["val"]
    assert done["split"]["train"]["count"] == len(recorded["train"]) - 1
    assert done["images"] == {"train": len(recorded["train"]) - 1, "val": len(recorded["val"])}
    log = " ".join(result.stderr.split())
    assert "2 file(s) added since the run trained (not in its recorded split), left out" in log
    assert f"1 file(s) of the run's recorded split are gone: {recorded['train'][0]}" in log


def test_resume_loads_a_last_checkpoint_with_fields_a_newer_catdog_added(interrupted: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    ckpt = checkpoints.load(copy / "last.pt")
    ckpt["config"]["label_smoothing"] = 0.1
    ckpt["state"]["ema"] = {"decay": 0.999}
    ckpt["calibration"] = {"temperature": 1.3}
    torch.save(ckpt, copy / "last.pt")
    done = ok_json(catdog("train", "--resume", copy, "--json"))
    assert not done["interrupted"] and done["epochs"] == 2


def test_two_resumes_of_one_run_cannot_both_run(interrupted: Path) -> None:
    before = snapshot(interrupted)
    with run_folder(interrupted, "train", reuse=True):  # a resume already running there
        line = error_line(catdog("train", "--resume", interrupted))
    assert line == (
        f"error: {interrupted} is in use by another catdog run; if none is running, delete {interrupted / LOCK}"
    )
    assert snapshot(interrupted) == before


DAMAGED = {  # a last.pt field -> what a damaged or forged file holds there
    "config": [["epochs", 2], {"epochs": "two"}, {"lr": float("nan")}, {"device": "mps"}],
    "state": [
        None,
        {"epoch": "1"},
        {"epoch": -1},
        {"step": 2.5},
        {"history": "none"},
        {"schedule_from": -3},
        {"schedule_from": "0"},
    ],
    "data": [5, None],
    "optimizer": [{}, {"state": {}, "param_groups": []}, "adam"],
    "scheduler": [[1]],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, v) for f, vs in DAMAGED.items() for v in vs],
    ids=[f"{f}={v!r}"[:40] for f, vs in DAMAGED.items() for v in vs],
)
def test_a_damaged_last_checkpoint_is_one_line(interrupted: Path, tmp_path: Path, field: str, value) -> None:
    copy = tmp_path / "run"
    shutil.copytree(interrupted, copy)
    ckpt = checkpoints.load(copy / "last.pt")
    if field in ("config", "state") and isinstance(value, dict):
        value = {**ckpt[field], **value}
    torch.save({**ckpt, field: value}, copy / "last.pt")
    before = snapshot(copy)
    line = error_line(catdog("train", "--resume", copy))
    assert str(copy / "last.pt") in line or "--" in line
    assert snapshot(copy) == before


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill -9", "SIGTERM in start-up"])
def test_a_run_killed_while_it_holds_its_folder_leaves_no_lock_that_blocks_it(tmp_path: Path, signum: int) -> None:
    """Killed as soon as it has claimed its folder (decoding can take minutes; schedulers preempt with SIGTERM):
    the lock's process is gone, so the folder takes a new run (or a resume) without anyone deleting the lock."""
    data, out = labeled_folder(tmp_path / "data", per_class=20), tmp_path / "run"
    proc = start_training(data, out)
    wait_for(lambda: (out / LOCK).exists(), proc)
    proc.send_signal(signum)
    proc.communicate(timeout=120)
    if (out / "last.pt").exists():  # it got as far as an epoch: go on with it
        done = ok_json(catdog("train", "--resume", out, "--json"))
    else:
        done = ok_json(catdog("train", "--data", data, *TINY_CLI, "--epochs", "1", "--out", out, "--json"))
    assert not done["interrupted"] and not (out / LOCK).exists()


def test_resume_under_torchrun_puts_each_rank_on_its_own_gpu_whatever_device_says(frozen_run, tmp_path, monkeypatch):
    """`catdog train --resume OUT --device cuda:0` under torchrun: rank 1 restores onto cuda:1, not onto GPU 0."""
    from catdog_cli.core.world import World
    from catdog_cli.training import resume as resume_mod

    out = tmp_path / "run"
    shutil.copytree(frozen_run["out"], out)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(resume_mod.distributed, "init", lambda: World(1, 2, 1))
    monkeypatch.setattr(resume_mod.distributed, "main_enters", lambda stack, context, world: None)
    restored_on = []

    class Restored(Exception):
        pass

    def restore(ckpt, device):
        restored_on.append(device)
        raise Restored

    monkeypatch.setattr(resume_mod.checkpoints, "restore_model", restore)
    with pytest.raises(Restored):
        resume_mod.resume(out, {"device": "cuda:0", "epochs": 3})
    assert restored_on == [torch.device("cuda:1")]
