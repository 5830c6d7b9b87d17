"""How numbers read, the same in the terminal, in compare.md and in the HTML report."""

from __future__ import annotations

import math
from typing import Any


def fmt(value: Any, kind: str = "num") -> str:
    """pct (a 0..1 rate), int, sec, params (millions above 10k), or num (4 significant digits)."""
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
    return f"{value:.4g}"


def pct(value: float | None) -> str:
    return fmt(value, "pct")
