"""folders: one set of rules for what a folder of images is, shared by fetch and training."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from helpers import linked_tree

from catdog_cli.data.folders import Walk, is_image_name, split_of, stratified_split, visible_dirs, walk_images


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


@pytest.mark.parametrize(
    ("name", "split"),
    [
        ("train", "train"),
        ("Training", "train"),
        ("val", "val"),
        ("valid", "val"),
        ("Validation", "val"),
        ("test", "test"),
        ("test1", "unlabeled"),
        ("cats", None),
    ],
)
def test_split_folder_names(name, split):
    assert split_of(Path(name)) == split


def test_image_names_by_suffix_in_any_case():
    assert is_image_name("a.JPEG") and is_image_name(Path("x/y.webp")) and not is_image_name("a.txt")


def test_stratified_split_keeps_class_proportions_and_one_train_image():
    by_class = {
        "big": [Path(f"big/{i}.jpg") for i in range(50)],
        "small": [Path(f"small/{i}.jpg") for i in range(5)],
        "two": [Path("two/0.jpg"), Path("two/1.jpg")],
        "one": [Path("one/0.jpg")],
    }
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


# --- one walk for a whole dataset: links, loops, the same file twice --------------------------------------


def _classes(top: Path) -> tuple[Walk, dict[str, list[Path]]]:
    """Walk a dataset class by class, as fetch does: {class: images}, files reached twice dropped."""
    walk = Walk(top)
    found = {d.name: walk.images(d)[0] for d in walk.listing(top)[0]}
    dropped = walk.duplicates()
    return walk, {c: [p for p in ps if p not in dropped] for c, ps in found.items()}


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


@pytest.mark.parametrize("seed", range(40))
def test_every_real_image_is_taken_once_in_its_own_class_whatever_the_links(tmp_path, seed):
    tree = linked_tree(tmp_path, seed)
    _, kept = _classes(tree.top)
    for cls, images in tree.real.items():  # never lost, never given another label
        assert set(images) <= set(kept[cls]), tree.hazards
    files = [_identity(p) for ps in kept.values() for p in ps]
    readable = [i for i in files if i is not None]
    assert len(readable) == len(set(readable)), tree.hazards  # no file twice, in one class or two
    for p in (p for ps in kept.values() for p in ps):  # only regular files (or links that name their fault)
        assert _identity(p) is None or stat.S_ISREG(os.stat(p).st_mode), (p, tree.hazards)
    outside = {_identity(p) for p in tree.outside}
    via_links = {_identity(p) for ps in kept.values() for p in ps} - {
        _identity(p) for ps in tree.real.values() for p in ps
    }
    assert via_links - {None} <= outside, tree.hazards  # what links add comes from outside the dataset


def test_a_link_into_another_class_never_relabels_its_images(tmp_path):
    for c in ("a", "b"):
        for i in range(2):
            _touch(tmp_path / c / f"{c}{i}.jpg")
    (tmp_path / "a" / "zz").symlink_to("../b", target_is_directory=True)  # walked before b/ itself
    (tmp_path / "b" / "0").symlink_to("../a", target_is_directory=True)
    walk, kept = _classes(tmp_path)
    assert kept == {
        "a": [tmp_path / "a" / "a0.jpg", tmp_path / "a" / "a1.jpg"],
        "b": [tmp_path / "b" / "b0.jpg", tmp_path / "b" / "b1.jpg"],
    }
    assert walk.duplicates()[tmp_path / "a" / "zz" / "b0.jpg"] == tmp_path / "b" / "b0.jpg"


def test_a_folder_linked_twice_is_walked_once_and_the_second_link_reported(tmp_path):
    shared = tmp_path / "elsewhere"
    _touch(shared / "x.jpg")
    for c in ("a", "b"):
        (tmp_path / "data" / c).mkdir(parents=True)
        (tmp_path / "data" / c / "photos").symlink_to(shared, target_is_directory=True)
    walk, kept = _classes(tmp_path / "data")
    assert kept == {"a": [tmp_path / "data" / "a" / "photos" / "x.jpg"], "b": []}
    assert walk.cut == [(tmp_path / "data" / "b" / "photos", "same folder as a/photos/, walked once")]


@pytest.mark.parametrize("target", ["..", "../..", ".", "/"])
def test_a_link_back_to_the_top_or_above_it_is_a_loop_and_not_followed(tmp_path, target):
    top = tmp_path / "data"
    image = _touch(top / "a" / "x.jpg")
    _touch(tmp_path / "beside.jpg")  # above the top: a link there must not bring it in
    (top / "a" / "up").symlink_to(target, target_is_directory=True)
    walk, kept = _classes(top)
    assert kept == {"a": [image]}
    assert walk.listing(top / "a")[0] == []  # nor is it offered as a folder when a layout is read


def test_a_link_out_of_the_dataset_is_followed(tmp_path):
    away = _touch(tmp_path / "disk2" / "cats" / "x.jpg")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cat").symlink_to(away.parent, target_is_directory=True)
    assert _classes(tmp_path / "data")[1] == {"cat": [tmp_path / "data" / "cat" / "x.jpg"]}


def test_hard_links_are_one_file_taken_where_the_walk_meets_it_first(tmp_path):
    first = _touch(tmp_path / "a" / "x.jpg")
    (tmp_path / "b").mkdir()
    os.link(first, tmp_path / "b" / "x.jpg")
    walk, kept = _classes(tmp_path)
    assert kept == {"a": [first], "b": []} and walk.duplicates() == {tmp_path / "b" / "x.jpg": first}


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_a_device_named_like_an_image_is_never_offered(tmp_path):
    (tmp_path / "zero.jpg").symlink_to("/dev/zero")  # reading it never ends
    images, others = walk_images(tmp_path)
    assert images == [] and others == [tmp_path / "zero.jpg"]
    assert Walk(tmp_path).images(tmp_path)[1] == [(tmp_path / "zero.jpg", "not a regular file")]


def test_the_same_file_under_two_names_in_one_folder_is_one_image(tmp_path):
    real = _touch(tmp_path / "b.jpg")
    (tmp_path / "a.jpg").symlink_to("b.jpg")  # sorted first, yet the real name wins
    assert walk_images(tmp_path)[0] == [real]


def test_a_class_folder_linking_up_to_the_dataset_never_pulls_in_other_classes_or_val(tmp_path):
    """Training walks each class folder on its own: a link from it back up (a loop) must not bring train/dog or
    val/ in under its label."""
    mine = [_touch(tmp_path / "train" / "cat" / f"{i}.jpg") for i in range(2)]
    for other in ("train/dog/0.jpg", "val/cat/0.jpg", "val/dog/0.jpg"):
        _touch(tmp_path / other)
    for k, target in enumerate(["..", "../..", "."]):
        (tmp_path / "train" / "cat" / f"up{k}").symlink_to(target, target_is_directory=True)
    assert walk_images(tmp_path / "train" / "cat")[0] == mine


def test_a_link_looping_back_is_no_class_folder(tmp_path):
    for c in ("cat", "dog"):
        _touch(tmp_path / c / "0.jpg")
    (tmp_path / "again").symlink_to(".", target_is_directory=True)  # would hold every class as one
    (tmp_path / "cat" / "up").symlink_to("..", target_is_directory=True)
    assert visible_dirs(tmp_path) == [tmp_path / "cat", tmp_path / "dog"]
    assert visible_dirs(tmp_path / "cat") == []
