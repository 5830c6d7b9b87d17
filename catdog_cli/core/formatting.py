"""How numbers and names read, the same in the terminal, in compare.md, in JSON and in the HTML report."""

from __future__ import annotations

import difflib
import math
import re
from typing import Any


def fmt(value: Any, kind: str = "num") -> str:
    """pct (a 0..1 rate), int, sec, params (millions above 10k), rate (per second: one decimal below 100,
    so 6.1 and 63.2 read alike), loss (4 decimals, as the epoch lines print it: 0.5170 above 0.7481, not
    0.517), or num (4 significant digits)."""
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "sec":
        return f"{value:.1f} s"
    if kind == "params":
        return f"{value / 1e6:.2f} M" if value >= 10_000 else f"{int(value):,}"
    if kind == "loss":
        return f"{value:.4f}"
    if kind == "rate":
        return f"{value:.1f}" if value < 100 else f"{value:,.0f}"
    return f"{value:.4g}"


def pct(value: float | None) -> str:
    return fmt(value, "pct")


def undefined_note(per_class: list[dict[str, Any]]) -> str:
    """Why a per-class rate is "—" (None in JSON): '— bees: no val image of this class (recall)'; "" when none is."""
    found = [f"{printable(r['class'])}: {r['undefined']}" for r in per_class if r.get("undefined")]
    return "— " + "; ".join(found) if found else ""


def _escaped(char: str, controls: bool) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte of a non-UTF-8 file name, as os.fsdecode keeps it
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:  # any other lone surrogate
        return f"\\u{code:04x}"
    if controls and not char.isprintable() and char != " ":
        return char.encode("unicode_escape").decode("ascii")
    return char


def printable(text: object, controls: bool = True) -> str:
    """`text` safe to print or encode as UTF-8: bytes of a non-UTF-8 file name (which Python keeps as lone
    surrogates) become `\\xNN`, and with `controls` so do control characters (a newline or an escape sequence
    in a file name must not break a line or drive the terminal)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(_escaped(c, controls) for c in text)


def printed_alike(names: list[str]) -> tuple[str, str] | None:
    """Two of `names` that differ but print the same (`printable`), or None: a folder named with bytes that are not
    UTF-8 (`chat` + byte 0xff prints `chat\\xff`) and one named with those four characters literally."""
    seen: dict[str, str] = {}
    for name in names:
        other = seen.setdefault(printable(name), name)
        if other != name:
            return other, name
    return None


def weights_text(weights: str) -> str:
    """What `--weights` means, in words: "default" and "none" are not names a reader should have to know."""
    return {"default": "ImageNet weights", "none": "random init"}.get(weights, f"weights from {weights}")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that reads digit runs as numbers: img2 before img10, as a person would list them."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part)


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """'did you mean resnet18? ' for a typo of one of `choices`, '' when nothing is close."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    if not close:
        return ""
    return f"did you mean {close[0]}? " if len(close) == 1 else f"did you mean {', '.join(close[:-1])} or {close[-1]}? "


def lr_text(lr: float) -> str:
    """A learning rate as people write it: 3e-3, 1e-4, 0.5."""
    mantissa, exponent = f"{lr:e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}" if lr < 0.01 else f"{lr:g}"
