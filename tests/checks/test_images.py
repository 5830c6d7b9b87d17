"""checks/images.py: what one read of a file finds."""

from __future__ import annotations

from pathlib import Path

from helpers import make_photo
from PIL import Image, ImageDraw

from catdog_cli.checks.duplicates import hash_bits
from catdog_cli.checks.images import MAX_ASPECT, TINY_PX, inspect


def kinds(path: Path) -> list[str]:
    return [kind for kind, _, _ in inspect(path, 64, 56).problems]


def distance(a: int, b: int) -> int:
    bits = hash_bits([a, b])
    return int((bits[0] != bits[1]).sum())


def test_a_photo_has_no_problem_and_gives_a_crop_and_a_hash(tmp_path):
    found = inspect(make_photo(tmp_path / "a.jpg", 1), 64, 56)
    assert found.problems == []
    assert found.crop.shape == (56, 56, 3)
    assert found.phash is not None
    assert "format JPEG" in found.facts


def test_truncated_and_empty_files_are_unreadable_errors(tmp_path):
    raw = make_photo(tmp_path / "full.jpg", 1).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not an image at all")
    for name, why in (("cut.jpg", "truncated"), ("empty.png", "empty"), ("text.png", "not an image")):
        found = inspect(tmp_path / name, 64, 56)
        assert [(k, lvl) for k, _, lvl in found.problems] == [("unreadable", "error")], name
        assert why in found.problems[0][1]
        assert found.crop is None and found.phash is None


def test_an_extension_that_lies(tmp_path):
    make_photo(tmp_path / "real.png", 1).rename(tmp_path / "fake.jpg")
    found = inspect(tmp_path / "fake.jpg", 64, 56)
    assert [(k, d) for k, d, _ in found.problems] == [("extension", "a PNG file named .jpg")]
    assert found.crop is not None  # still readable: it is a warning, not an error


def test_constant_and_placeholder_images(tmp_path):
    Image.new("RGB", (80, 60), (200, 30, 30)).save(tmp_path / "flat.png")
    placeholder = Image.new("RGB", (120, 120), (235, 235, 235))
    ImageDraw.Draw(placeholder).text((20, 50), "IMAGE NOT FOUND", fill=(60, 60, 60))
    placeholder.save(tmp_path / "missing.gif")
    assert kinds(tmp_path / "flat.png") == ["constant"]
    assert kinds(tmp_path / "missing.gif") == ["placeholder"]


def test_animated_tiny_and_extreme_aspect(tmp_path):
    frames = [Image.open(make_photo(tmp_path / f"f{i}.png", i)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    make_photo(tmp_path / "tiny.png", 4, size=(TINY_PX - 1, 40))
    make_photo(tmp_path / "strip.png", 5, size=(int(40 * MAX_ASPECT) + 10, 40))
    assert kinds(tmp_path / "anim.gif") == ["animated"]
    assert kinds(tmp_path / "tiny.png") == ["tiny"]
    assert kinds(tmp_path / "strip.png") == ["aspect"]


def test_exif_rotation_grayscale_and_alpha_are_facts_not_problems(tmp_path):
    im = Image.open(make_photo(tmp_path / "a.jpg", 1))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rotated.jpg", exif=exif)
    im.convert("L").save(tmp_path / "gray.png")
    im.convert("RGBA").save(tmp_path / "alpha.png")
    for name, fact in (("rotated.jpg", "exif-rotated"), ("gray.png", "grayscale"), ("alpha.png", "alpha")):
        found = inspect(tmp_path / name, 64, 56)
        assert fact in found.facts and found.problems == [], name


def test_perceptual_hash_survives_resize_and_reencode_not_another_picture(tmp_path):
    a = make_photo(tmp_path / "a.png", 1)
    Image.open(a).resize((48, 36)).save(tmp_path / "small.jpg", quality=25)
    make_photo(tmp_path / "b.png", 2)
    h = {n: inspect(tmp_path / n, 64, 56).phash for n in ("a.png", "small.jpg", "b.png")}
    assert distance(h["a.png"], h["small.jpg"]) <= 8
    assert distance(h["a.png"], h["b.png"]) >= 20
