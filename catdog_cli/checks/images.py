"""One file, read once: its content hash, what is wrong with it as a picture, its perceptual hash, and the eval crop
the backbone sees. Everything the other checks need comes from this single decode.

What "should not be there": a file that cannot be decoded (empty, truncated, not an image), an extension that
lies about the format, an animated GIF (catdog sees its first frame only), a placeholder or blank (most of the
picture one flat color: hymenoptera's `imageNotFound.gif` is 94 % light gray), a tiny picture, an extreme
aspect ratio. EXIF rotation, grayscale, CMYK and alpha are harmless facts (catdog handles each): counted only.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from catdog_cli.data.decode import ImageError, check_size, eval_crop, to_rgb

# what a suffix promises, as Pillow names formats (MPO: a JPEG with extra frames, as phones write)
SUFFIX_FORMATS = {
    ".jpg": {"JPEG", "MPO"},
    ".jpeg": {"JPEG", "MPO"},
    ".png": {"PNG"},
    ".gif": {"GIF"},
    ".bmp": {"BMP"},
    ".webp": {"WEBP"},
    ".tif": {"TIFF"},
    ".tiff": {"TIFF"},
}
TINY_PX = 32  # a short side below this is no photo worth training on
MAX_ASPECT = 3.0  # longer than 3:1: training keeps only the central 2:1 part, so most of it is never seen
FLAT_STD = 2.0  # grayscale standard deviation (0-255) below which a picture is one constant color
FLAT_SHARE = 0.8  # one flat color covering this share of the picture: a placeholder or a blank
PROBE_PX = 64  # the picture is looked at this small for flatness
HASH_PX = 32  # pHash: the DCT of a 32x32 grayscale, its 8x8 lowest frequencies against their median
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


@dataclass
class Inspected:
    """What one read of a file found. `crop` and `phash` are None when it could not be decoded."""

    sha256: str
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, detail, level)
    facts: list[str] = field(default_factory=list)  # exif-rotated, grayscale, cmyk, alpha, format JPEG, ...
    phash: int | None = None
    crop: np.ndarray | None = None  # uint8 (crop, crop, 3): the eval view the backbone sees


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    m = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


DCT = _dct_matrix(HASH_PX)


def perceptual_hash(image: Image.Image) -> int:
    """64-bit pHash: survives resizing and re-encoding; a crop or a color shift moves a few bits."""
    gray = np.asarray(image.convert("L").resize((HASH_PX, HASH_PX), Image.Resampling.BOX), dtype=np.float64)
    low = (DCT @ gray @ DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def flatness(image: Image.Image) -> tuple[str, str] | None:
    """(kind, detail) when the picture is one constant color, or mostly one flat color (a placeholder, a blank)."""
    small = image.resize((PROBE_PX, PROBE_PX), Image.Resampling.BOX)
    if np.asarray(small.convert("L"), dtype=np.float32).std() < FLAT_STD:
        return "constant", "one constant color"
    # colors within a few levels of each other count as one: JPEG noise must not hide a flat background
    q = np.asarray(small, dtype=np.int32) // 8
    counts = np.bincount((q[..., 0] * 1024 + q[..., 1] * 32 + q[..., 2]).ravel(), minlength=32 * 32 * 32)
    share = counts.max() / counts.sum()
    if share >= FLAT_SHARE:
        return "placeholder", f"{share:.0%} one flat color: a placeholder, a blank, a cut-out?"
    return None


def _facts(im: Image.Image) -> list[str]:
    facts = [f"format {im.format or '?'}"]
    if im.getexif().get(0x0112, 1) not in (0, 1):
        facts.append("exif-rotated")
    if im.mode in GRAYSCALE_MODES:
        facts.append("grayscale")
    elif im.mode == "CMYK":
        facts.append("cmyk")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        facts.append("alpha")
    return facts


def _header_problems(path: Path, im: Image.Image) -> list[tuple[str, str, str]]:
    problems = []
    expected = SUFFIX_FORMATS.get(path.suffix.lower())
    if expected and im.format not in expected:
        problems.append(("extension", f"a {im.format} file named {path.suffix}", "warning"))
    frames = getattr(im, "n_frames", 1)
    if frames > 1 and im.format != "MPO":
        problems.append(("animated", f"animated, {frames} frames: catdog sees the first only", "warning"))
    w, h = im.size
    if min(w, h) < TINY_PX:
        problems.append(("tiny", f"{w}x{h} pixels", "warning"))
    elif max(w, h) > MAX_ASPECT * min(w, h):
        problems.append(("aspect", f"{w}x{h} pixels ({max(w, h) / min(w, h):.1f}:1)", "warning"))
    return problems


def inspect(path: Path, resize: int, crop: int) -> Inspected:
    """Read the file once and look at it; never raises for a bad image (that is a finding)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:  # no permission, a broken link, a file gone since the folder was listed
        return Inspected("", [("unreadable", exc.strerror or str(exc), "error")])
    found = Inspected(hashlib.sha256(raw).hexdigest())
    if not raw:
        found.problems.append(("unreadable", "empty file", "error"))
        return found
    try:
        with Image.open(io.BytesIO(raw)) as im:
            check_size(im.width, im.height)
            found.facts = _facts(im)
            found.problems = _header_problems(path, im)
            if im.format == "JPEG":
                im.draft("RGB", (resize, resize))
            im.load()
            rgb = to_rgb(ImageOps.exif_transpose(im))
    except ImageError as exc:
        found.problems.append(("unreadable", str(exc), "error"))
        return found
    except Image.DecompressionBombError:
        found.problems.append(("unreadable", "too many pixels to decode safely", "error"))
        return found
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        found.problems.append(("unreadable", _reason(exc), "error"))
        return found
    if (flat := flatness(rgb)) is not None:
        found.problems.append((*flat, "warning"))
    found.phash = perceptual_hash(rgb)
    found.crop = np.asarray(eval_crop(rgb, resize, crop))
    return found


def _reason(exc: Exception) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return "not an image, or a format Pillow cannot read"
    if "truncated" in str(exc).lower() or "broken data stream" in str(exc).lower():
        return "truncated file"
    return str(exc).split("\n")[0] or type(exc).__name__
