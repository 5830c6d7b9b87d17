"""`catdog runs`' core: each run found from its own record, with the status it ended in; filters, sorting, one
run by name. The records are written by the test, shaped as train, compare and lr-find write them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from catdog_cli.core.paths import LOCK
from catdog_cli.errors import CatdogError
from catdog_cli.tracking.listing import find_run, find_runs, select


def write(folder: Path, name: str, record: dict, stamp: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(record))
    os.utime(folder / name, (stamp, stamp))


def train_record(data: str, backbone: str, strategy: str, acc: float, **extra) -> dict:
    config = {"data": f"/somewhere/{data}", "backbone": backbone, "strategy": strategy, "epochs": 3}
    return {"kind": "train", "config": config, "epochs": 3, "best_val_acc": acc, "interrupted": False} | extra


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    day = 1_800_000_000
    write(root / "train", "run.json", train_record("hymenoptera", "resnet18", "finetune", 0.9), day)
    write(
        root / "train2",
        "run.json",
        train_record("catdog", "resnet50", "freeze", 0.8, interrupted=True, epochs=1),
        day + 60,
    )
    stopped = train_record("catdog", "resnet18", "freeze", 0.95, ended="early stopping: no better val accuracy")
    write(root / "train" / "exp", "run.json", stopped, day + 120)
    compare = {
        "kind": "compare",
        "config": {"data": "/d/catdog", "backbones": ["resnet18", "timm:x"], "strategies": ["freeze"], "epochs": 2},
        "interrupted": False,
        "rows": [{"status": "ok", "best_val_acc": 0.7}, {"status": "failed", "best_val_acc": None}],
    }
    write(root / "compare", "compare.json", compare, day + 180)
    write(root / "compare" / "cells" / "resnet18-freeze", "cell.json", {}, day + 170)  # a cell is not a run
    failed = compare | {"rows": [{"status": "failed", "best_val_acc": None}]}
    write(root / "compare2", "compare.json", failed, day + 240)
    lr_find = {
        "kind": "lr_find",
        "config": {"data": "/d/catdog", "backbone": "resnet18"},
        "curves": [{"strategy": "freeze"}],
    }
    write(root / "lr-find", "lr_find.json", lr_find, day + 300)
    write(root / "train3", "last.pt", {}, day + 360)  # killed before its record: no one holds its lock
    write(root / "train4", "metrics.csv", {}, day + 420)
    (root / "train4" / LOCK).write_text(f"{os.getpid()}\n")  # this process holds it: still running
    (root / "mlflow.db").write_text("not a run")
    (root / "empty").mkdir()
    return root


def test_every_run_is_listed_oldest_first_with_its_status(runs: Path) -> None:
    found = find_runs(runs)
    assert [(r["name"], r["command"], r["status"]) for r in found] == [
        ("train", "train", "finished"),
        ("train2", "train", "interrupted"),
        ("train/exp", "train", "early-stopped"),
        ("compare", "compare", "finished"),
        ("compare2", "compare", "failed"),
        ("lr-find", "lr-find", "finished"),
        ("train3", "train", "failed"),
        ("train4", "train", "running"),
    ]
    first, interrupted, _, grid = found[:4]
    assert (first["data"], first["backbone"], first["strategy"], first["epochs"]) == (
        "hymenoptera",
        "resnet18",
        "finetune",
        "3/3",
    )
    assert interrupted["epochs"] == "1/3"
    assert (grid["backbone"], grid["best_val_acc"], grid["epochs"]) == ("resnet18,timm:x", 0.7, "2")
    assert first["path"] == str(runs / "train") and "run.json" in first["files"]


def test_filters_and_sorting(runs: Path) -> None:
    found = find_runs(runs)
    assert [r["name"] for r in select(found, data="CATDOG", strategy="freeze")] == [
        "train2",
        "train/exp",
        "compare",
        "compare2",
        "lr-find",
    ]
    assert [r["name"] for r in select(found, backbone="timm")] == ["compare", "compare2"]
    assert [r["name"] for r in select(found, sort="acc")][:4] == ["train/exp", "train", "train2", "compare"]
    assert [r["name"] for r in select(found, sort="name")][:3] == ["compare", "compare2", "lr-find"]
    with pytest.raises(CatdogError, match="--sort size: use one of date, name, acc"):
        select(found, sort="size")
    with pytest.raises(CatdogError, match="--data '': give a word to look for"):
        select(found, data="")


def test_one_run_by_its_folder_or_its_own_name(runs: Path) -> None:
    found = find_runs(runs)
    assert find_run(found, "train/exp")["status"] == "early-stopped"
    assert find_run(found, "exp")["name"] == "train/exp"
    with pytest.raises(CatdogError, match="no run named 'nope'"):
        find_run(found, "nope")
    (runs / "compare" / "exp").mkdir()  # a folder without a record: not a run
    write(runs / "other" / "exp", "run.json", train_record("d", "r", "s", 0.1), 1_900_000_000)
    with pytest.raises(CatdogError, match="2 runs are named 'exp': train/exp, other/exp; name one"):
        find_run(find_runs(runs), "exp")


def test_a_damaged_record_lists_the_run_as_failed_and_a_missing_folder_is_one_line(runs: Path) -> None:
    (runs / "train" / "run.json").write_text("{cut sh")
    assert find_run(find_runs(runs), "train")["status"] == "failed"
    with pytest.raises(CatdogError, match="no runs at"):
        find_runs(runs / "missing")
