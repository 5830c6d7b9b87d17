"""compare's rows as every output shows them (the terminal, compare.csv, compare.md, the HTML report): one table of
columns, one order, and the notes said above or under it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from catdog_cli.core.formatting import fmt
from catdog_cli.core.records import CompareResult, CompareRow


@dataclass(frozen=True)
class Column:
    """A compare-table column: the row key, its heading, how its numbers read (see formatting.fmt), and the
    short heading a terminal shows (the table's caption says what each means)."""

    key: str
    title: str
    kind: str = "text"
    short: str = ""

    @property
    def heading(self) -> str:
        return self.short or self.title

    def format(self, value: Any) -> str:
        if self.kind == "text":
            return "—" if value is None else str(value)
        return fmt(value, self.kind)


# The one column table of compare: terminal, compare.csv, compare.md and the HTML report, what matters first
# (a narrow terminal leaves out the last ones).
COMPARE_COLUMNS = (
    Column("backbone", "backbone"),
    Column("strategy", "strategy"),
    Column("best_val_acc", "val acc (best epoch)", "pct", "val acc"),
    Column("test_acc", "test acc (best weights)", "pct", "test acc"),
    Column("best_epoch", "epoch", "int"),
    Column("train_seconds", "train time", "sec", "time"),
    Column("params_trainable", "trainable", "params"),
    Column("val_loss", "val loss", "loss"),
    Column("params_total", "params", "params"),
    Column("images_per_sec", "img/s", "rate"),
    Column("status", "status"),
    Column("error", "error"),
)


def sort_rows(rows: list[CompareRow]) -> list[CompareRow]:
    """Best val accuracy first (ties: by backbone, then in grid order); failed cells last."""

    def key(r: CompareRow) -> tuple[bool, float, str]:
        acc = r.get("best_val_acc")
        return r.get("status") != "ok", -(acc if acc is not None else -1.0), str(r.get("backbone"))

    return sorted(rows, key=key)


def random_init_note(result: CompareResult) -> str | None:
    """What the table, compare.md and the report say about backbones trained from random weights: on a few
    hundred images such cells sit near the majority class, which is no verdict on the architecture."""
    none = [b for b, w in (result.get("weights") or {}).items() if w == "none"]
    if not none:
        return None
    return (
        f"random init (--weights none), no ImageNet weights: {', '.join(none)}; on a small dataset these cells "
        "stay near the majority class, which says nothing of the architecture"
    )


def interrupted_note(result: CompareResult) -> str | None:
    """What the table, compare.md and the report say about a grid stopped before its end (None: it ran to its end)."""
    if not result.get("interrupted"):
        return None
    config = result.get("config") or {}
    total = len(config.get("backbones") or []) * len(config.get("strategies") or [])
    return (
        f"interrupted: {len(result.get('rows') or [])} of {total} cells finished; the same command with the "
        "same --out finishes the grid"
    )
