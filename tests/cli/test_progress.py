"""Work in progress on stderr: the summary before a run, and the run's events as one unbroken line each off a
terminal, with img/s and ETA every tenth or every 15 seconds."""

from __future__ import annotations

import io

from helpers import logged, printed
from rich.console import Console

from catdog_cli.cli import progress
from catdog_cli.core.records import RunSummary


def _summary(**changes) -> RunSummary:
    summary: RunSummary = {
        "kind": "train",
        "data": "/data/hymenoptera",
        "classes": ["ants", "bees"],
        "images": {"train": 244, "val": 153},
        "split_origin": "folders",
        "backbones": ["resnet34"],
        "strategies": ["freeze"],
        "weights": {"resnet34": "none"},
        "params": {"resnet34": {"total": 21_285_698, "trainable": 1_026}},
        "lr": 0.001,
        "epochs": 5,
        "batch_size": 32,
        "image_size": 224,
        "augment": True,
        "device": "cpu",
        "precision": "fp32",
        "out": "runs/train3",
        "recipe": [],
    }
    return {**summary, **changes}


def test_run_summary_names_data_model_training_device_and_output():
    text = "\n".join(printed(progress.run_summary(_summary()), 80))
    for expected in (
        "/data/hymenoptera",
        "2 classes: ants, bees",
        "train 244, val 153 (val split: folders)",
        "resnet34, random init: 21.29 M parameters, 1,026 trainable",
        "freeze, lr 0.001, 5 epochs",
        "cpu, fp32",
        "runs/train3",
    ):
        assert expected in text
    assert "none weights" not in text


def test_compare_summary_lists_each_backbones_own_weights():
    summary = _summary(
        kind="compare",
        backbones=["resnet18", "timm:tf_efficientnet_lite0"],
        strategies=["finetune", "freeze"],
        params={},
        lr=None,
        image_size=None,
        weights={"resnet18": "/w/r18.pth", "timm:tf_efficientnet_lite0": "default"},
    )
    text = "\n".join(printed(progress.run_summary(summary), 120))
    assert "2 backbones x 2 strategies = 4 cells" in text
    assert "resnet18: weights from /w/r18.pth" in text and "timm:tf_efficientnet_lite0: ImageNet weights" in text
    assert "each strategy's default lr" in text and "each backbone's own image size" in text


def test_off_a_terminal_each_event_is_one_unbroken_line():
    console = progress.console(stderr=True)
    assert not console.is_terminal  # pytest captures stderr
    buffer = io.StringIO()
    console.file = buffer
    events = progress.RichEvents(console)
    assert events.progress.disable  # no progress bars off a terminal
    long_name = "/data/" + "a-rather-long-folder-name/" * 8 + "image.jpg"
    with events:
        events.task("epoch 1/1", 10)
        events.advance(5)
        events.note(f"skipped {long_name}: truncated file")
        events.epoch(
            {
                "epoch": 1,
                "train_loss": 0.5,
                "train_acc": 0.75,
                "val_loss": 0.25,
                "val_acc": 0.875,
                "lr": 0.001,
                "seconds": 16.9,
                "images_per_sec": 13.25,
                "val_seconds": 2.1,
            }
        )
    lines = buffer.getvalue().splitlines()
    assert lines == [
        f"skipped {long_name}: truncated file",
        "epoch   1  train loss 0.5000 acc 75.0%  val loss 0.2500 acc 87.5%  train 16.9s (13.2 img/s) + val 2.1s",
    ]


def test_columns_decide_a_tables_width_off_a_terminal_but_never_break_a_line(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    console = progress.console()
    assert console.width == 40
    console.file = io.StringIO()
    progress.RichEvents(console).note("x" * 100)
    assert console.file.getvalue() == "x" * 100 + "\n"


def _logged(durations: list[float], total: int, batch: int = 1, terminal: bool = False) -> list[str]:
    """What RichEvents prints for a task whose units take `durations` seconds each, on a fake clock."""
    now, out = [0.0], io.StringIO()
    events = progress.RichEvents(Console(file=out, force_terminal=terminal, width=200), clock=lambda: now[0])
    with events:
        events.task("epoch 1/3", total, batch=batch)
        for seconds in durations:
            now[0] += seconds
            events.advance(1)
    return [line for line in out.getvalue().splitlines() if line.startswith("epoch 1/3:")]


def test_off_a_terminal_progress_is_a_line_every_tenth_with_img_per_s_and_eta():
    lines = _logged([1.0] * 40, total=40, batch=32)
    assert lines[0] == "epoch 1/3: step 5/40 (12%), 32.0 img/s, ETA 0:35"  # after 5 quiet seconds
    assert [int(line.split("step ")[1].split("/")[0]) for line in lines] == [5, 8, 12, 16, 20, 24, 28, 32, 36]
    assert lines[-1].endswith("ETA 0:04")  # the end itself is told by the epoch's line


def test_off_a_terminal_slow_work_is_told_every_15_seconds_and_quick_work_not_at_all():
    lines = _logged([4.0] * 20, total=1000)  # a tenth would take 400 s
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [
        "4/1000",
        "8/1000",
        "12/1000",
        "16/1000",
        "20/1000",
    ]  # t = 16, 32, ... s
    assert "0.2 img/s" in lines[0]
    assert _logged([0.1] * 40, total=40, batch=32) == []  # 4 s in all: the epoch's own line is enough
    assert _logged([1.0] * 40, total=40, batch=32, terminal=True) == []  # a terminal has its bar


def test_summary_lines_carry_no_padding_in_a_log():
    """Cells are padded to their column's width; in a log those spaces would only be noise, and a pipe read on
    a narrower terminal would wrap them into blank lines."""
    lines = logged(progress.run_summary(_summary()))
    assert lines and all(line == line.rstrip() for line in lines)
    assert "" not in lines
