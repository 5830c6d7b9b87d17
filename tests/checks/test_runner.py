"""checks/runner.py: a whole dataset checked at once, on synthetic data with planted faults."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import Recorder, make_photo, snapshot
from PIL import Image

from catdog_cli.checks.runner import CheckOptions, check_dataset
from catdog_cli.errors import CatdogError

TINTS = {"blue": (30, 40, 230), "red": (230, 40, 30)}
TINY = CheckOptions(backbone="resnet18", weights="none", image_size=32, device="cpu", workers=1)
HASHES_ONLY = CheckOptions(backbone="resnet18", features=False, workers=1)


def clean(root: Path, train: int = 10, val: int = 4) -> Path:
    seed = 0
    for split, n in (("train", train), ("val", val)):
        for name, tint in TINTS.items():
            for i in range(n):
                seed += 1
                make_photo(root / split / name / f"{split}{i}.png", seed, tint)
    return root


@pytest.fixture
def faulty(tmp_path: Path) -> Path:
    """A clean dataset, then: a val image copied into train (a leak), a shrunk JPEG copy of a train image (a
    near-duplicate), a red image in blue (a flipped label), a constant image, a truncated file, a PNG named .jpg."""
    root = clean(tmp_path / "data")
    shutil.copy(root / "val/red/val0.png", root / "train/red/copy_of_val0.png")
    Image.open(root / "train/blue/train3.png").resize((64, 48)).save(root / "train/blue/small3.jpg", quality=40)
    make_photo(root / "train/blue/flipped.png", 999, TINTS["red"])
    Image.new("RGB", (64, 64), (128, 128, 128)).save(root / "train/red/flat.png")
    raw = (root / "train/red/train1.png").read_bytes()
    (root / "train/red/cut.png").write_bytes(raw[: len(raw) // 2])
    shutil.copy(make_photo(tmp_path / "liar.png", 555, TINTS["blue"]), root / "train/blue/liar.jpg")
    return root


def test_every_planted_fault_is_found_and_the_leak_comes_first(faulty):
    before = snapshot(faulty)
    result = check_dataset(faulty, TINY, Recorder())
    assert snapshot(faulty) == before  # nothing written, nothing touched in the data folder

    first = result["duplicates"][0]
    assert (first["kind"], first["leak"], first["level"]) == ("exact", True, "error")
    assert {first["a"]["path"], first["b"]["path"]} == {"val/red/val0.png", "train/red/copy_of_val0.png"}
    near = [d for d in result["duplicates"] if d["kind"] == "near"]
    assert any({d["a"]["path"], d["b"]["path"]} == {"train/blue/train3.png", "train/blue/small3.jpg"} for d in near)

    assert result["label_check"]["ran"]
    top = [(s["path"], s["given"], s["suspected"]) for s in result["labels"][:2]]
    assert ("train/blue/flipped.png", "blue", "red") in top

    problems = {(p["path"], p["kind"], p["level"]) for p in result["problems"]}
    assert {
        ("train/red/flat.png", "constant", "warning"),
        ("train/red/cut.png", "unreadable", "error"),
        ("train/blue/liar.jpg", "extension", "warning"),
    } <= problems
    assert result["problems"][0]["level"] == "error"
    assert result["findings"]["error"] == 2  # the leak and the truncated file: no other pair across splits
    assert result["counts"]["train"] == {"blue": 13, "red": 13}


def test_without_features_near_duplicates_come_from_the_hash(faulty):
    result = check_dataset(faulty, HASHES_ONLY, Recorder())
    near = [d for d in result["duplicates"] if d["kind"] == "near"]
    assert [{d["a"]["path"], d["b"]["path"]} for d in near] == [{"train/blue/train3.png", "train/blue/small3.jpg"}]
    assert near[0]["similarity"] is None and near[0]["distance"] <= 10
    assert not result["label_check"]["ran"] and "--no-features" in result["label_check"]["why_not"]


def test_a_clean_dataset_has_no_error_and_balance_is_counted(tmp_path):
    root = clean(tmp_path / "data", train=6, val=3)
    (root / "val/blue").rename(tmp_path / "gone")
    result = check_dataset(root, HASHES_ONLY, Recorder())
    assert result["findings"]["error"] == 0 and result["duplicates"] == [] and result["problems"] == []
    assert result["missing"] == {"val": ["blue"]}
    assert result["counts"]["val"] == {"blue": 0, "red": 3}


def test_an_unlabeled_folder_is_read_too(tmp_path):
    root = clean(tmp_path / "data", train=4, val=2)
    shutil.copy(root / "train/red/train1.png", make_photo(root / "unlabeled/x.png", 77).parent / "y.png")
    result = check_dataset(root, HASHES_ONLY, Recorder())
    leak = result["duplicates"][0]
    assert leak["leak"] and {leak["a"]["split"], leak["b"]["split"]} == {"train", "unlabeled"}
    assert None in (leak["a"]["label"], leak["b"]["label"]) and not leak["conflict"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root.mkdir(), "has 0 class folder"),
        (lambda root: make_photo(root / "only" / "a.png", 1), "has 1 class folder"),
        (
            lambda root: [(root / c).mkdir(parents=True) or (root / c / "a.txt").write_text("x") for c in "ab"],
            "has 0 class folder",
        ),
    ],
    ids=["empty", "one-class", "no-images"],
)
def test_bad_input_is_one_clear_error(tmp_path, make, message):
    make(tmp_path / "data")
    with pytest.raises(CatdogError, match=message):
        check_dataset(tmp_path / "data", HASHES_ONLY, Recorder())
