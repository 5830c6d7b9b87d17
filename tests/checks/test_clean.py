"""checks/clean.py: --out writes a cleaned copy and a CSV of every decision; the input stays as it was."""

from __future__ import annotations

import csv

import pytest
from helpers import Recorder, make_photo, snapshot
from test_runner import TINTS, TINY, clean, faulty  # noqa: F401  (faulty is a fixture)

from catdog_cli.checks.runner import check_dataset
from catdog_cli.errors import CatdogError


def decisions(out):
    return {row["path"]: row for row in csv.DictReader((out / "decisions.csv").open())}


def test_a_cleaned_copy_drops_leaks_and_placeholders_and_sets_suspects_aside(faulty, tmp_path):  # noqa: F811
    before = snapshot(faulty)
    out = tmp_path / "cleaned"
    result = check_dataset(faulty, TINY, Recorder(), out=out)
    assert snapshot(faulty) == before
    rows = decisions(out)
    assert rows["train/red/copy_of_val0.png"]["decision"] == "dropped"  # the training copy of a leak goes
    assert (out / "val/red/val0.png").is_file()  # val stays whole
    assert not (out / "train/red/copy_of_val0.png").exists()
    for gone in ("train/red/flat.png", "train/red/cut.png"):
        assert rows[gone]["decision"] == "dropped" and not (out / gone).exists()
    assert rows["train/blue/flipped.png"]["decision"] == "review"
    assert (out / "_review/train/blue/flipped.png").is_file() and not (out / "train/blue/flipped.png").exists()
    assert rows["train/blue/liar.jpg"]["decision"] == "kept" and (out / "train/blue/liar.jpg").is_file()
    assert result["cleaned"]["decisions"]["dropped"] >= 3
    assert len(rows) == len(before)  # every file has its decision


def test_relabel_moves_a_suspect_to_the_class_it_looks_like(faulty, tmp_path):  # noqa: F811
    out = tmp_path / "cleaned"
    check_dataset(faulty, TINY, Recorder(), out=out, relabel=True)
    assert decisions(out)["train/blue/flipped.png"]["copied_to"] == "train/red/flipped.png"
    assert (out / "train/red/flipped.png").is_file()


def test_out_must_be_new_and_outside_the_data(tmp_path):
    root = clean(tmp_path / "data", train=3, val=2)
    (tmp_path / "taken").mkdir()
    for out, why in ((tmp_path / "taken", "already exists"), (root / "clean", "inside the data folder")):
        with pytest.raises(CatdogError, match=why):
            check_dataset(root, TINY, Recorder(), out=out)


def test_a_folder_without_splits_gets_its_review_folder_beside_the_copy(tmp_path):
    root = tmp_path / "flat"  # DIR/<class>/*: a _review/ folder inside the copy would read as a class
    for k, (name, tint) in enumerate(TINTS.items()):
        for i in range(12):
            make_photo(root / name / f"{i}.png", 100 * k + i, tint)
    make_photo(root / "blue" / "flipped.png", 999, TINTS["red"])
    out = tmp_path / "cleaned"
    check_dataset(root, TINY, Recorder(), out=out)
    row = decisions(out)["blue/flipped.png"]
    assert row["decision"] == "review" and row["copied_to"] == "../cleaned-review/blue/flipped.png"
    assert (tmp_path / "cleaned-review/blue/flipped.png").is_file()
    assert not (out / "_review").exists()
