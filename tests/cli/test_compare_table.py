"""compare's table in the terminal: it fits any width by leaving out whole columns, failed cells say one word and
their reasons come under it."""

from __future__ import annotations

import pytest
from helpers import logged, printed

from catdog_cli.cli import compare_table
from catdog_cli.core.compare_rows import sort_rows
from catdog_cli.core.formatting import fmt, pct
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


@pytest.mark.parametrize("failed", [True, False])
@pytest.mark.parametrize("test", [True, False])
def test_compare_table_fits_80_columns_and_every_accuracy_reads_whole(failed: bool, test: bool):
    result = _result(failed, test)
    lines = printed(compare_table.compare_table(result), 80)
    assert max(map(len, lines)) <= 80
    for row in result["rows"]:
        if row["status"] == "ok":  # each finished cell's line names it and shows its accuracies in full
            (line,) = [ln for ln in lines if f" {row['backbone']} " in ln and f" {row['strategy']} " in ln]
            assert pct(row["best_val_acc"]) in line
            assert not test or pct(row["test_acc"]) in line
    assert "…" not in "".join(lines)  # nothing cut: a column that does not fit is left out whole


def test_failed_cells_show_a_word_and_their_reasons_under_the_table():
    lines = printed(compare_table.compare_table(_result(failed=True)), 80)
    table_end = min(i for i, ln in enumerate(lines) if "vgg16_bn" in ln and "finetune" in ln and "OOM" in ln)
    timm_row = [ln for ln in lines if ln.lstrip().startswith("timm:tf_efficientnet_lite0")]
    assert len(timm_row) == 1 and " weights " in timm_row[0] + " "
    under = " ".join(ln.strip() for ln in lines[table_end + 1 :])
    assert "OOM: vgg16_bn / finetune: " + OUT_OF_MEMORY in under
    assert "pass --weights PATH" in under  # the whole reason, wrapped as prose under the table


def test_narrow_terminal_says_which_columns_it_left_out():
    lines = printed(compare_table.compare_table(_result(failed=True)), 80)
    (note,) = [ln for ln in lines if ln.startswith("not shown at this width")]
    assert "img/s" in note and "val acc" not in note
    wide = printed(compare_table.compare_table(_result(failed=True)), 160)
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
    lines = printed(compare_table.compare_table(result), 200)
    assert [ln for ln in lines if ln.startswith("OOM:")] == [f"OOM: vgg16_bn / finetune, freeze: {OUT_OF_MEMORY}"]


def test_markup_in_names_and_reasons_is_shown_as_typed():
    result = _result(failed=False)
    result["rows"].append(_row("[bold]odd[/bold]", "freeze", None, "[red]no[/red] weights"))
    text = "\n".join(printed(compare_table.compare_table(result), 200))
    assert "[bold]odd[/bold]" in text and "[red]no[/red] weights" in text


def test_table_lines_carry_no_padding_in_a_log():
    """Cells are padded to their column's width; in a log those spaces would only be noise, and a pipe read on
    a narrower terminal would wrap them into blank lines."""
    lines = logged(compare_table.compare_table(_result()))
    assert lines and all(line == line.rstrip() for line in lines)
    assert "" not in lines
