"""Finding labeled images (both layouts, stratified split, fetched names) and decoding any image to RGB."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CLASS_COLORS, bomb_png, make_image, special_file
from PIL import Image, ImageFile

from catdog_cli.core.paths import resolve_data
from catdog_cli.data import dataset as data
from catdog_cli.data import decode
from catdog_cli.data.dataset import load_dataset, split_record
from catdog_cli.data.decode import ImageSpec, collate, decode_split, load_eval_image, load_train_image, open_rgb
from catdog_cli.data.folders import walk_images
from catdog_cli.errors import CatdogError

# --- layouts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("val_name", ["val", "valid", "validation"])
def test_split_folders_layout(image_folder, val_name):
    root = image_folder(classes=("cat", "dog"), train=4, val=2, test=1, val_name=val_name)
    ds = load_dataset(root)
    assert ds.classes == ["cat", "dog"]
    assert ds.origin == "folders"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 4, "test": 2}
    for split in ds.splits.values():  # each label is the class folder the file is in
        assert all(p.parent.name == ds.classes[label] for p, label in zip(split.paths, split.labels))
    assert all(val_name in p.parts for p in ds.splits["val"].paths)


@pytest.mark.parametrize("target", ["../dog", "../../val/cat", "../../val"])
def test_a_link_from_one_class_folder_to_a_sibling_never_relabels_or_leaks_val(image_folder, target):
    root = image_folder(classes=("cat", "dog"), train=4, val=2)
    (root / "train" / "cat" / "more").symlink_to(target, target_is_directory=True)
    ds = load_dataset(root)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 8, "val": 4}  # every file once, where it is
    for split in ds.splits.values():
        assert not any("more" in p.parts for p in split.paths)
    assert not set(map(os.path.realpath, ds.splits["train"].paths)) & set(map(os.path.realpath, ds.splits["val"].paths))
    assert any("taken once" in n for n in ds.notes)


def test_train_folder_without_val_is_split_stratified(image_folder):
    root = image_folder(train=10, val=0)
    ds = load_dataset(root, val_split=0.2, seed=0)
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 16, "val": 4}
    assert "random" in ds.origin


def test_flat_layout_split_is_stratified_deterministic_and_complete(image_folder):
    root = image_folder(layout="flat", classes=("a", "b", "c"), train=8, val=2)  # 10 images per class
    ds = load_dataset(root, val_split=0.2, seed=7)
    assert ds.classes == ["a", "b", "c"]
    train, val = ds.splits["train"], ds.splits["val"]
    assert [val.labels.count(k) for k in range(3)] == [2, 2, 2]
    assert [train.labels.count(k) for k in range(3)] == [8, 8, 8]
    assert set(train.paths).isdisjoint(val.paths)
    assert sorted(train.paths + val.paths) == sorted(walk_images(root)[0])

    again = load_dataset(root, val_split=0.2, seed=7)
    assert again.splits["val"].paths == val.paths and again.splits["train"].paths == train.paths
    other_seed = load_dataset(root, val_split=0.2, seed=8)
    assert set(other_seed.splits["val"].paths) != set(val.paths)


def test_stratified_split_is_the_same_in_every_process(image_folder):
    """The split may not depend on per-process state such as str hashing (PYTHONHASHSEED)."""
    root = image_folder(layout="flat", train=8, val=2)
    code = (
        "import sys; from catdog_cli.data.dataset import load_dataset; "
        "print([p.name for p in load_dataset(sys.argv[1], 0.2, 5).splits['val'].paths])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, str(root)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "1"},
    ).stdout  # this process: a random hash seed
    assert other.strip() == str([p.name for p in load_dataset(root, 0.2, 5).splits["val"].paths])


def test_model_classes_refuse_a_training_class_folder_the_model_cannot_name(image_folder):
    root = image_folder(classes=("cat", "dog", "fox"))
    with pytest.raises(CatdogError, match=r"does not know: fox \(its classes: cat, dog\)"):
        load_dataset(root, classes=["cat", "dog"])


def test_folder_without_split_evaluated_whole(image_folder):
    root = image_folder(layout="flat", train=3, val=0)
    ds = load_dataset(root, val_split=None, classes=["cat", "dog"])
    assert list(ds.splits) == ["all"] and len(ds.split("all")) == 6
    with pytest.raises(CatdogError, match="no 'test' split"):
        ds.split("test")


def test_data_name_resolves_in_catdog_home(image_folder, tmp_path, monkeypatch):
    home = tmp_path / "home"
    image_folder(name="home/ants-and-bees")
    monkeypatch.setenv("CATDOG_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # no ./ants-and-bees here: the name must come from the data root
    assert resolve_data("ants-and-bees") == home / "ants-and-bees"
    assert load_dataset("ants-and-bees").classes == ["cat", "dog"]
    with pytest.raises(CatdogError, match=r"known datasets: hymenoptera, catdog, petimages, for `catdog fetch NAME`"):
        load_dataset("nothing-here")


def test_a_name_read_as_a_folder_here_says_so_and_names_the_fetched_one(image_folder, tmp_path, monkeypatch):
    """Run from the folder holding the clone (named catdog), `--data catdog` read ./catdog, said '0 class
    folder(s)' without its path, and never mentioned the fetched dataset."""
    home = tmp_path / "home"
    image_folder(name="home/catdog")
    monkeypatch.setenv("CATDOG_HOME", str(home))
    work = tmp_path / "work"
    (work / "catdog" / "catdog_cli").mkdir(parents=True)  # the clone
    monkeypatch.chdir(work)
    with pytest.raises(CatdogError) as refused:
        load_dataset("catdog")
    assert str(refused.value) == (
        f"{work / 'catdog'} has 0 class folder(s) with images; a classifier needs at least 2 (expected "
        f"DIR/<class>/*.jpg or DIR/train/<class>/*.jpg); --data catdog read the folder {work / 'catdog'}; the "
        f"fetched dataset is {home / 'catdog'} (pass that path)"
    )
    image_folder(name="work/catdog")  # a real dataset here too: it is read, and the note says which
    assert load_dataset("catdog").notes[0].startswith(f"--data catdog read the folder {work / 'catdog'}; ")
    assert not any("--data" in n for n in load_dataset(home / "catdog").notes)  # a path is never ambiguous


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("hymenopter", "; did you mean hymenoptera?"),
        ("mine2", "; did you mean mine?"),  # a fetched name
        ("petimages", " (`catdog fetch petimages`; offline, `catdog fetch petimages --from ARCHIVE`)"),
        ("a/b", " (a path that does not exist)"),
    ],
)
def test_a_missing_dataset_names_the_path_read_and_what_was_meant(image_folder, tmp_path, monkeypatch, data, expected):
    home = tmp_path / "home"
    image_folder(name="home/mine")
    monkeypatch.setenv("CATDOG_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatdogError) as refused:
        load_dataset(data)
    assert str(refused.value) == (
        f"no dataset at {data!r}: no folder {tmp_path / data}, and nothing fetched as {data!r} into {home}{expected}"
    )


def test_a_file_is_not_a_dataset(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(CatdogError, match="is a file"):
        load_dataset(tmp_path / "x.jpg")


def test_one_class_is_refused(image_folder):
    with pytest.raises(CatdogError, match="at least 2"):
        load_dataset(image_folder(layout="flat", classes=("only",)))
    with pytest.raises(CatdogError, match="at least 2"):
        load_dataset(image_folder(classes=("only",)))


def test_empty_class_folders_are_left_out_with_a_note(image_folder):
    root = image_folder(layout="flat", classes=("a", "b", "c"))
    for f in (root / "c").iterdir():
        f.unlink()
    (root / "a" / "notes.txt").write_text("not an image")
    (root / "a" / ".hidden.jpg").write_bytes(b"junk")
    (root / "a" / "Thumbs.db").write_bytes(b"junk")
    ds = load_dataset(root)
    assert ds.classes == ["a", "b"]
    assert any("no images" in n for n in ds.notes) and any("non-image" in n for n in ds.notes)
    assert not any(p.name.startswith(".") or p.name == "Thumbs.db" for p in ds.split("train").paths)


def test_no_images_at_all_is_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(CatdogError):
        load_dataset(tmp_path)


def test_model_classes_fix_the_labels(image_folder):
    root = image_folder(classes=("cat", "dog", "fox"))
    ds = load_dataset(root, classes=["dog", "cat", "fox"])
    assert ds.classes == ["dog", "cat", "fox"]
    val = ds.splits["val"]
    assert all(p.parent.name == ds.classes[label] for p, label in zip(val.paths, val.labels))


# --- decoding: any mode to RGB, EXIF, broken files -------------------------------------------------------


def _pixel(im: Image.Image, xy=(0, 0)) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(im)[xy[1], xy[0]])


def test_modes_load_as_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.new("L", (8, 6), 90).save(gray)
    rgba = tmp_path / "rgba.png"
    im = Image.new("RGBA", (8, 6), (10, 200, 30, 255))
    im.paste((0, 0, 0, 0), (0, 0, 4, 6))  # left half fully transparent: shows as white
    im.save(rgba)
    palette = tmp_path / "palette.gif"
    p = Image.new("P", (8, 6), 1)
    p.putpalette([0, 0, 0, 200, 20, 20] + [0] * 762)
    p.save(palette)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(cmyk, quality=100)
    la = tmp_path / "la.png"
    Image.new("LA", (8, 6), (120, 255)).save(la)

    for path in (gray, rgba, palette, cmyk, la):
        out = open_rgb(path)
        assert out.mode == "RGB" and out.size == (8, 6), path.name
    assert _pixel(open_rgb(gray)) == (90, 90, 90)
    assert _pixel(open_rgb(rgba), (0, 0)) == (255, 255, 255)
    assert _pixel(open_rgb(rgba), (7, 0)) == (10, 200, 30)
    assert _pixel(open_rgb(palette)) == (200, 20, 20)
    r, g, b = _pixel(open_rgb(cmyk), (4, 3))
    assert r > 200 and g < 60 and b < 60  # CMYK (0, 255, 255, 0) is red
    assert _pixel(open_rgb(la)) == (120, 120, 120)


def test_palette_with_transparency_composites_on_white(tmp_path):
    path = tmp_path / "ptrans.png"
    p = Image.new("P", (6, 6), 0)
    p.putpalette([0, 255, 0, 0, 0, 255] + [0] * 762)
    p.paste(1, (3, 0, 6, 6))
    p.save(path, transparency=0)
    out = open_rgb(path)
    assert _pixel(out, (0, 0)) == (255, 255, 255) and _pixel(out, (5, 0)) == (0, 0, 255)


def test_16_bit_png_is_scaled_to_8_bits(tmp_path):
    path = tmp_path / "deep.png"
    values = np.zeros((4, 8), dtype=np.uint16)
    values[:, 4:] = 65535
    values[:, 2:4] = 32768
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(open_rgb(path))
    assert out.shape == (4, 8, 3) and out.dtype == np.uint8
    assert (out[:, :2] == 0).all() and (out[:, 4:] == 255).all()
    assert (np.abs(out[:, 2:4].astype(int) - 128) <= 1).all()


def test_exif_orientation_is_applied(tmp_path):
    """A sideways camera JPEG (Orientation=6, rotate 90 cw to view): stored 40x20, upright 20x40."""
    stored = Image.new("RGB", (40, 20), (220, 30, 30))
    stored.paste((30, 30, 220), (0, 0, 20, 20))  # left half blue: after the cw turn, the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    stored.save(path, exif=exif, quality=95)

    upright = open_rgb(path)
    assert upright.size == (20, 40)
    top, bottom = _pixel(upright, (10, 5)), _pixel(upright, (10, 35))
    assert top[2] > 180 and top[0] < 80, top
    assert bottom[0] > 180 and bottom[2] < 80, bottom

    image, transposed = load_train_image(path, resize=16)  # a portrait, so stored on its side
    assert transposed and image.shape == (3, 16, 32)
    eval_image = load_eval_image(path, resize=16, crop=16)
    assert eval_image.shape == (3, 16, 16)
    assert eval_image[2, 0].float().mean() > eval_image[0, 0].float().mean()  # top row blue
    assert eval_image[0, -1].float().mean() > eval_image[2, -1].float().mean()  # bottom row red


def test_undecodable_files_are_skipped_and_named(tmp_path, image_folder):
    root = image_folder(layout="flat", train=3, val=0)
    broken = root / "cat" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    empty = root / "dog" / "empty.png"
    empty.write_bytes(b"")
    truncated = root / "dog" / "truncated.png"
    good = root / "dog" / "img000.png"
    truncated.write_bytes(good.read_bytes()[:40])
    ds = load_dataset(root, val_split=None)
    split = ds.split("all")
    for spec in (ImageSpec(train=True, resize=32, crop=28), ImageSpec(train=False, resize=32, crop=28)):
        batch, skipped = decode_split(split, spec, workers=2)
        assert {p for p, _ in skipped} == {broken, empty, truncated}
        assert dict(skipped)[empty] == "empty file"
        assert all(reason and "\n" not in reason for _, reason in skipped)
        assert len(batch) == len(split) - 3
        kept = {split.paths[i] for i in batch.index.tolist()}
        assert kept.isdisjoint({broken, empty, truncated})
        assert batch.labels.tolist() == [split.labels[i] for i in batch.index.tolist()]


def test_pixel_limit_refuses_huge_images_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(decode, "MAX_PIXELS", 5000)
    with pytest.raises(decode.ImageError, match="pixel limit"):
        open_rgb(path)


# --- decoded shapes ---------------------------------------------------------------------------------------


def test_train_images_keep_their_view_at_short_side_resize(tmp_path):
    landscape = Image.new("RGB", (60, 40))
    landscape.save(tmp_path / "land.png")
    image, transposed = load_train_image(tmp_path / "land.png", 32)
    assert image.shape == (3, 32, 48) and not transposed and image.dtype == torch.uint8

    landscape.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "port.png")
    image, transposed = load_train_image(tmp_path / "port.png", 32)
    assert image.shape == (3, 32, 48) and transposed

    pano = Image.new("RGB", (200, 40), (0, 0, 0))
    pano.paste((255, 255, 255), (50, 0, 150, 40))  # the central 2:1 part is white
    pano.save(tmp_path / "pano.png")
    image, _ = load_train_image(tmp_path / "pano.png", 20)
    assert image.shape == (3, 20, 40)
    assert image.min() == 255


def test_collate_pads_train_images_and_records_valid_sizes():
    from catdog_cli.data.decode import Decoded

    items = [
        Decoded(torch.full((3, 4, 6), 7, dtype=torch.uint8), 1, 0, False),
        Decoded(torch.full((3, 4, 8), 9, dtype=torch.uint8), 0, 1, True),
    ]
    batch = collate(items, train=True)
    assert batch.images.shape == (2, 3, 4, 8)
    assert batch.sizes.tolist() == [[4, 6], [4, 8]]
    assert batch.transposed.tolist() == [False, True]
    assert batch.labels.tolist() == [1, 0] and batch.index.tolist() == [0, 1]
    assert (batch.images[0, :, :, :6] == 7).all()
    assert (batch.images[1] == 9).all()


def test_decode_split_reports_progress_per_image(image_folder):
    ds = load_dataset(image_folder(layout="flat", train=2, val=0), val_split=None)
    ticks = []
    decode_split(ds.split("all"), ImageSpec(False, 20, 16), workers=2, on_image=lambda: ticks.append(1))
    assert len(ticks) == 4


# --- the split a run recorded holds, whatever changes in the folder -------------------------------------------


def _relative(paths, root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in paths}


def _mutate(root, layout: str, rng: random.Random, trained: list[str]) -> tuple[set[str], set[str], set[str]]:
    """Add, remove, move and copy images the way people do between runs. Returns (added outside val/, added to
    val/ under a new name, removed) as paths relative to root."""
    base = "" if layout == "flat" else "train/"
    added, new_val, removed = set(), set(), set()
    for i in range(rng.randint(1, 4)):  # new images whose names sort anywhere among the old ones
        rel = f"{base}{rng.choice(['cat', 'dog'])}/{rng.choice(['a', 'img0', 'img05', 'zz'])}new{i}.png"
        make_image(root / rel, CLASS_COLORS[0], (40, 30))
        added.add(rel)
    files = sorted(_relative(walk_images(root)[0], root) - added)
    for rel in rng.sample(files, rng.randint(0, 3)):
        (root / rel).unlink()
        removed.add(rel)
    if layout == "split":
        for i in range(rng.randint(1, 2)):
            rel = f"val/{rng.choice(['cat', 'dog'])}/fresh{i}.png"
            make_image(root / rel, CLASS_COLORS[1], (40, 30))
            new_val.add(rel)
        still = [r for r in trained if (root / r).exists()]
        moved, copied = rng.sample(still, 2)
        shutil.move(root / moved, root / "val" / rng.choice(["cat", "dog"]) / Path(moved).name)  # relabeled too
        shutil.copy(root / copied, root / "val" / Path(copied).parent.name / Path(copied).name)
        removed.add(moved)
    return added, new_val, removed


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("layout", ["flat", "train-only", "split"])
def test_a_recorded_split_holds_whatever_changed_in_the_folder(image_folder, layout, seed):
    rng = random.Random(seed)
    root = image_folder(layout="flat" if layout == "flat" else "split", train=10, val=0 if layout != "split" else 3)
    before = load_dataset(root, 0.2, seed)
    record = split_record(before)
    assert _relative(before.splits["val"].paths, root) == set(record["val"])
    added, new_val, removed = _mutate(root, layout, rng, record["train"])

    after = load_dataset(root, 0.2, seed, recorded=record)
    here = _relative(walk_images(root)[0], root)
    val, train = _relative(after.splits["val"].paths, root), _relative(after.splits["train"].paths, root)
    assert train == set(record["train"]) & here  # the run's training images, as many as are left
    assert val == (set(record["val"]) & here) | new_val  # its val images, and images put in val/ under a new name
    trained_names = {Path(r).name for r in record["train"]}
    assert not {Path(r).name for r in val - set(record["val"])} & trained_names  # a training image never counts
    left_out = _relative([p for p, _ in after.left_out], root)
    assert left_out == here - train - val and added <= left_out
    assert after.missing == sorted(removed & (set(record["train"]) | set(record["val"])))
    assert all(any(p.name in n or str(p) in n for n in after.notes) for p, _ in after.left_out[:5])


def test_a_recorded_split_keeps_its_order(image_folder):
    """A resumed run must see its training images in the same order, or its batches would differ."""
    root = image_folder(layout="flat", train=10, val=0)
    before = load_dataset(root, 0.2, 3)
    make_image(root / "cat" / "a0.png", CLASS_COLORS[0])
    after = load_dataset(root, 0.2, 3, recorded=split_record(before))
    assert after.splits["train"].paths == before.splits["train"].paths
    assert after.splits["val"].paths == before.splits["val"].paths


# --- bounded decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1, 1_000_000), (1_000_000, 1), (2, 50_000), (150, 20_000), (70_000, 600)])
def test_a_needle_image_is_refused_from_its_header(tmp_path, monkeypatch, size):
    path = tmp_path / "needle.png"
    path.write_bytes(bomb_png(*size))

    def load(self):  # where Pillow allocates the pixels: never reached
        raise AssertionError("the needle was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(decode.ImageError, match="longer than 100:1"):
        open_rgb(path)


@pytest.mark.parametrize("seed", range(30))
def test_train_resizing_allocates_about_what_is_kept_and_eval_is_exactly_classic(tmp_path, monkeypatch, seed):
    """Up to 100:1 an image is decoded; a train image's resize then makes at most FULL_RESIZE times the part kept.
    An eval crop is exactly what a resize of the whole then a crop gives, whatever the shape: it is the contract an
    exported file states (the region-only resize was up to 1 grey level apart: 3e-3 in probability)."""
    rng = random.Random(seed)
    long, short = rng.randint(40, 3000), rng.randint(4, 40)
    long = min(long, short * decode.MAX_RATIO)
    size = (long, short) if rng.random() < 0.5 else (short, long)
    path = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    resize = rng.randint(16, 64)
    crop = rng.randint(8, resize)
    made = []
    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, s, *a, **k: made.append(s) or real_resize(self, s, *a, **k))

    image, _ = load_train_image(path, resize)
    longest = int(decode.MAX_ASPECT * resize)
    assert image.shape[1] == resize and resize <= image.shape[2] <= longest
    assert made[-1][0] * made[-1][1] <= decode.FULL_RESIZE * resize * longest
    evaluated = load_eval_image(path, resize, crop)
    assert evaluated.shape == (3, crop, crop)
    assert made[-1] == decode.resized_size(*size, resize)

    with Image.open(path) as im:  # the classic way, allocating the whole resized image
        w, h = decode.resized_size(im.width, im.height, resize)
        whole = real_resize(im.convert("RGB"), (w, h), Image.Resampling.BILINEAR)
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    classic = torch.from_numpy(np.array(whole.crop((left, top, left + crop, top + crop)))).permute(2, 0, 1)
    assert torch.equal(evaluated, classic)


@pytest.mark.parametrize("kind", ["fifo", "socket", "char device", "null device"])
def test_only_regular_files_are_read(tmp_path, kind):
    """A FIFO named like an image would hang a read forever, /dev/zero would never end: refused, never read."""
    path = special_file(kind, tmp_path)
    done = []

    def attempt() -> None:
        with pytest.raises(decode.ImageError, match="not a regular file"):
            open_rgb(Path(path))
        done.append(True)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(timeout=60)  # a deadline for a hang, not a timing
    assert done == [True]


def test_an_unreadable_class_folder_is_left_out_with_its_reason(image_folder, monkeypatch):
    root = image_folder(classes=("cat", "dog", "fox"))
    real = os.scandir
    locked = root / "train" / "fox"

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(data.os, "scandir", scandir)
    ds = load_dataset(root)
    assert ds.classes == ["cat", "dog"]
    assert f"{locked}: cannot read it (Permission denied), class left out" in ds.notes


def test_an_unreadable_data_folder_is_one_line(tmp_path, monkeypatch):
    from catdog_cli.core import paths

    def scandir(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(paths.os, "scandir", scandir)
    with pytest.raises(CatdogError, match=f"cannot read {tmp_path}: Permission denied"):
        load_dataset(tmp_path)


def test_a_placeholder_image_is_left_out_with_a_word(image_folder):
    """hymenoptera's train/ants/imageNotFound.gif was trained on as an ant, silently."""
    root = image_folder()
    gif = root / "train" / "cat" / "imageNotFound.gif"
    make_image(gif, (200, 200, 200))
    ds = load_dataset(root)
    assert gif not in ds.splits["train"].paths and len(ds.splits["train"]) > 0
    assert f"{gif}: left out, a placeholder for a missing photo (by its name), not a photo of cat" in ds.notes


# --- issue 25, class 8: names that print alike ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "literal"),
    [(b"chat\xff", b"chat\\xff"), (b"a\nb", b"a\\nb"), (b"\x1b[31mred", b"\\x1b[31mred")],
    ids=["not UTF-8", "a newline", "an escape sequence"],
)
def test_two_class_folders_that_print_alike_are_refused_naming_both(tmp_path, raw, literal):
    """catdog prints a name it cannot print as-is with escapes; a folder literally named with those escapes then
    printed the same, so that no table, JSON, CSV or report could tell the two classes apart."""
    for k, name in enumerate((raw, literal, b"dog")):
        for i in range(3):
            make_image(tmp_path / os.fsdecode(name) / f"{i}.png", CLASS_COLORS[k])
    with pytest.raises(CatdogError) as refused:
        load_dataset(tmp_path)
    line = str(refused.value)
    assert "print alike" in line and repr(raw) in line and repr(literal) in line and "\n" not in line
    assert "rename one of them" in line


def test_names_that_only_look_alike_are_two_classes(tmp_path):
    for k, name in enumerate((b"chat\xff", b"chat\\xfe")):  # printed chat\xff and chat\xfe: apart
        for i in range(3):
            make_image(tmp_path / os.fsdecode(name) / f"{i}.png", CLASS_COLORS[k])
    assert load_dataset(tmp_path).classes == sorted(map(os.fsdecode, (b"chat\xff", b"chat\\xfe")))
