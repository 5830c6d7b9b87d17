"""How numbers read, the same in the terminal, in compare.md and in the HTML report."""

from __future__ import annotations

from typing import Any


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f} M" if n >= 10_000 else f"{n:,}"


def cell(key: str, value: Any) -> str:
    """A compare-table value by column name."""
    if value is None:
        return "—"
    if key in ("best_val_acc", "test_acc"):
        return pct(value)
    if key in ("params_total", "params_trainable"):
        return params(value)
    if key == "val_loss":
        return f"{value:.4f}"
    if key == "train_seconds":
        return f"{value:.1f}"
    if key == "images_per_sec":
        return f"{value:,.0f}"
    return str(value)
