"""compare's table in the terminal: fitted to the console's width by leaving out whole columns from the least
telling, never squeezing a number; a failed cell's one status word, and the reasons listed under the table.
"""

from __future__ import annotations

from collections.abc import Iterator

from rich import box
from rich.console import Console, ConsoleOptions, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from catdog_cli.cli.progress import UNWRAPPED, Trimmed
from catdog_cli.core.compare_rows import COMPARE_COLUMNS, Column, interrupted_note, random_init_note
from catdog_cli.core.formatting import printable
from catdog_cli.core.records import CompareResult

# what a failed cell's status column says; its whole reason is listed under the table
FAILURE_WORDS = (
    ("out of memory", "OOM"),
    ("cannot take", "size"),
    ("weights", "weights"),
    ("timm", "backbone"),
    ("backbone", "backbone"),
)  # first match wins: a size refusal also names the weights' size


def failure_word(error: str | None) -> str:
    """A failed cell's reason in one word ("OOM", "weights", "size", "backbone"), "failed" if none fits."""
    text = (error or "").lower()
    return next((word for fragment, word in FAILURE_WORDS if fragment in text), "failed")


class CompareTable:
    """The compare table, fitted to the console it is printed on: columns that do not fit are left out from
    the last (the least telling), never squeezed, so numbers never wrap. A failed cell shows one status word
    where its val accuracy would be; the reasons are listed under the table."""

    def __init__(self, result: CompareResult):
        self.result = result
        has_test = any(r.get("test_acc") is not None for r in result["rows"])
        self.columns = [
            c for c in COMPARE_COLUMNS if c.key not in ("status", "error") and (has_test or c.key != "test_acc")
        ]
        self.kept = 3  # backbone, strategy, val acc: always shown

    def table(self, columns: list[Column]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("", no_wrap=True)
        for c in columns:
            text = c.kind == "text"
            table.add_column(
                c.heading,
                justify="left" if text else "right",
                no_wrap=not text,
                overflow="fold" if text else "ellipsis",
            )
        for n, row in enumerate(self.result["rows"]):
            ok = row["status"] == "ok"
            best = n == 0 and ok
            cells = [
                Text(failure_word(row["error"]), style="red")
                if c.key == "best_val_acc" and not ok
                else Text(printable(c.format(row[c.key])))
                for c in columns
            ]
            table.add_row("★" if best else "", *cells, style="bold green" if best else None)
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[RenderableType]:
        columns = list(self.columns)
        table = self.table(columns)
        unbounded = options.update(max_width=UNWRAPPED)  # the table's natural width, not what rich would squeeze
        while len(columns) > self.kept and Measurement.get(console, unbounded, table).maximum > options.max_width:
            columns.pop()
            table = self.table(columns)
        result = self.result
        shown = {c.key for c in columns}
        test = "; test acc: those weights on the test split" if "test_acc" in shown else ""
        yield Text(
            printable(
                f"compare on {result['config']['data']}: val acc is on the val split "
                f"({result['split_origin']}) at each cell's best epoch{test}"
            )
        )
        yield Trimmed(table)
        note = interrupted_note(result)
        if note:
            yield Text(printable(note), style="bold red")
        if random := random_init_note(result):
            yield Text(printable(random), style="yellow")
        reasons: dict[tuple[str, str], list[str]] = {}  # a backbone's cells that failed alike: one line
        for row in result["rows"]:
            if row["status"] != "ok":
                reasons.setdefault((row["backbone"], row["error"] or "no reason recorded"), []).append(row["strategy"])
        for (backbone, error), strategies in reasons.items():
            yield Text.assemble(
                (f"{failure_word(error)}: ", "red"), printable(f"{backbone} / {', '.join(strategies)}: {error}")
            )
        hidden = [c.heading for c in self.columns if c.key not in shown]
        if hidden:
            yield Text(f"not shown at this width: {', '.join(hidden)} (compare.md has every column)", style="dim")


def compare_table(result: CompareResult) -> CompareTable:
    """Sorted by val accuracy, the best row starred; the line above it says which split each accuracy is on."""
    return CompareTable(result)
