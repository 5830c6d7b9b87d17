"""What the terminal shows: the compare table at any width, the summary before a run, lines off a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from catdog_cli.cli import compare_table, progress, render
from catdog_cli.core.compare_rows import sort_rows
from catdog_cli.core.formatting import fmt, pct
from catdog_cli.core.records import RunSummary
from catdog_cli.errors import OUT_OF_MEMORY

TIMM_OFFLINE = (
    "could not download timm weights for tf_efficientnet_lite0 (<urlopen error [Errno -3] Temporary "
    "failure in name resolution>); offline, pass --weights PATH"
)


def _row(backbone: str, strategy: str, acc: float | None, error: str | None = None, test: float | None = None):
    ok = error is None
    return {
        "backbone": backbone,
        "strategy": strategy,
        "status": "ok" if ok else "failed",
        "error": error,
        "params_total": 21_797_672 if ok else None,
        "params_trainable": 1_026 if ok else None,
        "best_val_acc": acc,
        "best_epoch": 3 if ok else None,
        "val_loss": 0.2345 if ok else None,
        "test_acc": test,
        "train_seconds": 1234.5 if ok else None,
        "images_per_sec": 6.084 if ok else None,
        "history": [],
    }


def _result(failed: bool = True, test: bool = False) -> dict:
    rows = [
        _row("resnet34", "finetune", 0.9412, test=0.93 if test else None),
        _row("squeezenet1_1", "freeze", 0.8856, test=0.87 if test else None),
        _row("densenet121", "discriminative", 0.9281, test=0.9 if test else None),
    ]
    if failed:
        rows += [
            _row("vgg16_bn", "finetune", None, OUT_OF_MEMORY),
            _row("timm:tf_efficientnet_lite0", "freeze", None, TIMM_OFFLINE),
        ]
    return {
        "kind": "compare",
        "config": {"data": "/home/someone/.local/share/catdog/hymenoptera"},
        "device": "cpu",
        "world_size": 1,
        "classes": ["ants", "bees"],
        "split_origin": "folders",
        "versions": {},
        "out": "runs/compare",
        "interrupted": False,
        "wall_seconds": 1.0,
        "best": None,
        "rows": sort_rows(rows),
    }


def _printed(renderable: object, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("failed", [True, False])
@pytest.mark.parametrize("test", [True, False])
def test_compare_table_fits_80_columns_and_every_accuracy_reads_whole(failed: bool, test: bool):
    result = _result(failed, test)
    lines = _printed(compare_table.compare_table(result), 80)
    assert max(map(len, lines)) <= 80
    for row in result["rows"]:
        if row["status"] == "ok":  # each finished cell's line names it and shows its accuracies in full
            (line,) = [ln for ln in lines if f" {row['backbone']} " in ln and f" {row['strategy']} " in ln]
            assert pct(row["best_val_acc"]) in line
            assert not test or pct(row["test_acc"]) in line
    assert "…" not in "".join(lines)  # nothing cut: a column that does not fit is left out whole


def test_failed_cells_show_a_word_and_their_reasons_under_the_table():
    lines = _printed(compare_table.compare_table(_result(failed=True)), 80)
    table_end = min(i for i, ln in enumerate(lines) if "vgg16_bn" in ln and "finetune" in ln and "OOM" in ln)
    timm_row = [ln for ln in lines if ln.lstrip().startswith("timm:tf_efficientnet_lite0")]
    assert len(timm_row) == 1 and " weights " in timm_row[0] + " "
    under = " ".join(ln.strip() for ln in lines[table_end + 1 :])
    assert "OOM: vgg16_bn / finetune: " + OUT_OF_MEMORY in under
    assert "pass --weights PATH" in under  # the whole reason, wrapped as prose under the table


def test_narrow_terminal_says_which_columns_it_left_out():
    lines = _printed(compare_table.compare_table(_result(failed=True)), 80)
    (note,) = [ln for ln in lines if ln.startswith("not shown at this width")]
    assert "img/s" in note and "val acc" not in note
    wide = _printed(compare_table.compare_table(_result(failed=True)), 160)
    assert not any(ln.startswith("not shown") for ln in wide)
    header = next(ln for ln in wide if "backbone" in ln)
    assert header.split() == [
        "backbone",
        "strategy",
        "val",
        "acc",
        "epoch",
        "time",
        "trainable",
        "val",
        "loss",
        "params",
        "img/s",
    ]  # no test split: no test column
    assert any(fmt(1234.5, "sec") in ln and "6.1" in ln for ln in wide)  # numbers whole, img/s one decimal


@pytest.mark.parametrize(
    "error, word",
    [
        (OUT_OF_MEMORY, "OOM"),
        (TIMM_OFFLINE, "weights"),
        (
            "vit_b_16 cannot take 64 px images (Wrong image height! Expected 224 "
            "but got 64!); choose another --image-size (its weights were made for "
            "224 px)",
            "size",
        ),
        ("unknown backbone 'resnet9000'; choose one of ...", "backbone"),
        ("something else", "failed"),
        (None, "failed"),
    ],
)
def test_failure_words(error, word):
    assert compare_table.failure_word(error) == word


def test_a_backbones_cells_that_failed_alike_share_one_reason_line():
    result = _result(failed=False)
    result["rows"] += [_row("vgg16_bn", strategy, None, OUT_OF_MEMORY) for strategy in ("finetune", "freeze")]
    lines = _printed(compare_table.compare_table(result), 200)
    assert [ln for ln in lines if ln.startswith("OOM:")] == [f"OOM: vgg16_bn / finetune, freeze: {OUT_OF_MEMORY}"]


def test_markup_in_names_and_reasons_is_shown_as_typed():
    result = _result(failed=False)
    result["rows"].append(_row("[bold]odd[/bold]", "freeze", None, "[red]no[/red] weights"))
    text = "\n".join(_printed(compare_table.compare_table(result), 200))
    assert "[bold]odd[/bold]" in text and "[red]no[/red] weights" in text


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
    text = "\n".join(_printed(progress.run_summary(_summary()), 80))
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


def test_summary_and_table_lines_carry_no_padding(monkeypatch):
    """Cells are padded to their column's width; in a log those spaces would only be noise, and a pipe read on
    a narrower terminal would wrap them into blank lines."""
    monkeypatch.delenv("COLUMNS", raising=False)
    console = progress.console()
    console.file = io.StringIO()
    console.print(progress.run_summary(_summary()))
    console.print(compare_table.compare_table(_result()))
    lines = console.file.getvalue().splitlines()
    assert lines and all(line == line.rstrip() for line in lines)
    assert "" not in lines


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
    text = "\n".join(_printed(progress.run_summary(summary), 120))
    assert "2 backbones x 2 strategies = 4 cells" in text
    assert "resnet18: weights from /w/r18.pth" in text and "timm:tf_efficientnet_lite0: ImageNet weights" in text
    assert "each strategy's default lr" in text and "each backbone's own image size" in text


def test_train_summary_after_a_stop_before_the_first_epoch_and_weights_in_words():
    result = {
        "config": {"backbone": "resnet18", "weights": "none", "strategy": "freeze"},
        "params": {"total": 11_177_538, "trainable": 1_026},
        "classes": ["a", "b"],
        "split_origin": "folders",
        "device": "cpu",
        "precision": "fp32",
        "epochs": 0,
        "best_val_acc": None,
        "best_epoch": 0,
        "skipped": [],
        "out": "runs/train",
    }
    text = "\n".join(_printed(render.train_summary(result), 100))
    assert "resnet18 (random init)" in text
    assert "none: stopped before the first epoch ended" in text and "(epoch 0)" not in text


def test_off_a_terminal_each_event_is_one_unbroken_line(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
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
