"""folders: one set of rules for what a folder of images is, shared by fetch and training."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from catdog_cli.folders import is_image_name, split_of, stratified_split, walk_images


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_walk_finds_images_recursively_sorted_and_lists_other_files(tmp_path):
    a, b = _touch(tmp_path / "b" / "2.JPG"), _touch(tmp_path / "a" / "1.png")
    notes = _touch(tmp_path / "a" / "notes.txt")
    for litter in (".DS_Store", "Thumbs.db", "desktop.ini", ".hidden.jpg", "__MACOSX/x.jpg", ".git/y.png"):
        _touch(tmp_path / litter)
    images, others = walk_images(tmp_path)
    assert images == [b, a] and others == [notes]


def test_walk_follows_a_symlinked_folder_once_and_cuts_loops(tmp_path):
    image = _touch(tmp_path / "real" / "x.jpg")
    (tmp_path / "real" / "again").symlink_to("..", target_is_directory=True)  # a loop back to the top
    (tmp_path / "link").symlink_to("real", target_is_directory=True)  # the same folder under a second name
    images, _ = walk_images(tmp_path)
    assert len(images) == 1 and images[0].resolve() == image.resolve()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_walk_never_offers_a_fifo_named_like_an_image(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # reading it would block forever
    good = _touch(tmp_path / "good.jpg")
    images, others = walk_images(tmp_path)
    assert images == [good] and others == [tmp_path / "pipe.jpg"]


def test_a_broken_or_looping_link_is_offered_so_that_decoding_names_its_fault(tmp_path):
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    assert walk_images(tmp_path)[0] == [tmp_path / "loop.jpg"]


@pytest.mark.parametrize(("name", "split"), [("train", "train"), ("Training", "train"), ("val", "val"),
                                             ("valid", "val"), ("Validation", "val"), ("test", "test"),
                                             ("test1", "unlabeled"), ("cats", None)])
def test_split_folder_names(name, split):
    assert split_of(Path(name)) == split


def test_image_names_by_suffix_in_any_case():
    assert is_image_name("a.JPEG") and is_image_name(Path("x/y.webp")) and not is_image_name("a.txt")


def test_stratified_split_keeps_class_proportions_and_one_train_image():
    by_class = {"big": [Path(f"big/{i}.jpg") for i in range(50)], "small": [Path(f"small/{i}.jpg") for i in range(5)],
                "two": [Path("two/0.jpg"), Path("two/1.jpg")], "one": [Path("one/0.jpg")]}
    train, val = stratified_split(by_class, 0.2, seed=3)
    assert {k: len(v) for k, v in val.items()} == {"big": 10, "small": 1, "two": 1, "one": 0}
    assert {k: len(v) for k, v in train.items()} == {"big": 40, "small": 4, "two": 1, "one": 1}
    # the order of the input lists does not matter, only the files and the seed
    shuffled = {k: list(reversed(v)) for k, v in by_class.items()}
    assert stratified_split(shuffled, 0.2, seed=3) == (train, val)


def test_zero_val_fraction_holds_nothing_out():
    by_class = {"a": [Path(f"a/{i}.jpg") for i in range(5)], "b": [Path(f"b/{i}.jpg") for i in range(5)]}
    train, val = stratified_split(by_class, 0.0, seed=0)
    assert val == {"a": [], "b": []} and sum(map(len, train.values())) == 10
