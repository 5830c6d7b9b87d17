"""Rich rendering of what the engine returns: progress bars, per-epoch lines, tables."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from catdog_cli.balance import imbalance_note
from catdog_cli.events import Events
from catdog_cli.formatting import fmt, pct, printable
from catdog_cli.records import (
    COMPARE_COLUMNS,
    CompareResult,
    CompareRow,
    EpochRecord,
    EvaluateResult,
    LrCurve,
    LrFindResult,
    Prediction,
    TrainResult,
    interrupted_note,
    shown_steps,
)


def safe(text: object) -> str:
    """A name from the user's files (a class, a path, a reason quoting one) as rich prints it verbatim: markup
    escaped (`[red]rouge` stays `[red]rouge`), non-UTF-8 bytes and control characters escaped."""
    return escape(printable(text))


class RichEvents(Events):
    """Engine events as a transient progress bar, one line per epoch, and yellow notes."""

    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
        )
        self.current = None
        self.grid = None
        self.show_epochs = True

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def task(self, description: str, total: int) -> None:
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **info: float) -> None:
        if self.current is None:
            return
        text = "  ".join(f"{k} {v:.3f}" for k, v in info.items())
        self.progress.update(self.current, advance=n, **({"info": text} if text else {}))

    def epoch(self, record: EpochRecord) -> None:
        if not self.show_epochs:  # compare prints a line per cell instead
            return
        self.console.print(epoch_line(record))

    def note(self, text: str) -> None:
        self.console.print(f"[yellow]{safe(text)}[/]", highlight=False)  # file names may hold [brackets]

    def cell_done(self, row: CompareRow) -> None:
        self.console.print(f"{safe(row['backbone'])} / {row['strategy']}: best val acc {pct(row['best_val_acc'])} "
                           f"(epoch {row['best_epoch']}), {row['train_seconds']:.1f}s")

    def cell(self, index: int, total: int, name: str) -> None:
        self.show_epochs = False
        if self.grid is None:
            self.grid = self.progress.add_task("", total=total, info="")
        self.progress.update(self.grid, completed=index,
                             description=f"[bold]cell {index + 1}/{total}: {safe(name)}[/]")


def epoch_line(record: EpochRecord) -> str:
    """Training and validation timed apart: img/s is training images over training time only."""
    ema = f"  EMA val acc {pct(record['ema_val_acc'])}" if "ema_val_acc" in record else ""
    return (f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} acc {pct(record['train_acc'])}  "
            f"[bold]val loss {record['val_loss']:.4f} acc {pct(record['val_acc'])}[/]{ema}  "
            f"train {record['seconds']:.1f}s ({record['images_per_sec']:.0f} img/s) + val "
            f"{record.get('val_seconds', 0.0):.1f}s")


def train_summary(result: TrainResult) -> Table:
    config = result["config"]
    table = Table(title="training run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    counts = result["params"]
    rows = [
        ("backbone", safe(f"{config['backbone']} ({config['weights']} weights)")),
        ("strategy", config["strategy"]),
        ("parameters", f"{fmt(counts['total'], 'params')} total, {fmt(counts['trainable'], 'params')} trainable"),
        ("classes", safe(", ".join(result["classes"]))),
        ("val split", safe(result["split_origin"])),
        ("device", f"{result['device']} ({result['precision']})"),
        ("epochs", f"{result['epochs']} ({result['ended']})" if "ended" in result else str(result["epochs"])),
        ("best val accuracy", f"{pct(result['best_val_acc'])} (epoch {result['best_epoch']}"
                              f"{', EMA weights' if result.get('best_weights') == 'ema' else ''})"),
    ]
    if "evaluation" in result:  # each class's recall: what an imbalanced folder hides behind accuracy
        rows.append(("val recall per class", safe(", ".join(f"{c['class']} {pct(c['recall'])}"
                                                             for c in result["evaluation"]["per_class"]))))
    counts = result.get("train_counts")
    note = imbalance_note(result["classes"], list(counts.values())) if counts else None
    if note:
        rows.append(("class balance", safe(note) + (": --balance was on" if config.get("balance") else "")))
    if "test" in result:
        rows.append(("test accuracy (best.pt)", pct(result["test"]["accuracy"])))
    if result["skipped"]:
        rows.append(("skipped files", str(len(result["skipped"]))))
    rows.append(("saved in", safe(result["out"])))
    for row in rows:
        table.add_row(*row)
    return table


def evaluation_tables(ev: EvaluateResult) -> list[Table]:
    split = ev["split"]
    model = ""
    if "backbone" in ev:
        model = f"{safe(ev['backbone'])} ({fmt(ev['params']['total'], 'params')} parameters) on "
    metrics = Table(title=f"{model}{split} split: accuracy {pct(ev['accuracy'])}, loss {ev['loss']:.4f}, "
                          f"{ev['num_images']} images", title_justify="left")
    for col in ("class", "precision", "recall", "F1", "images"):
        metrics.add_column(col, justify="left" if col == "class" else "right")
    for row in ev["per_class"]:
        metrics.add_row(safe(row["class"]), pct(row["precision"]), pct(row["recall"]), pct(row["f1"]),
                        str(row["support"]))
    classes = [safe(row["class"]) for row in ev["per_class"]]
    confusion = Table(title=f"confusion on {split} (rows: true, columns: predicted)", title_justify="left")
    confusion.add_column("")
    for name in classes:
        confusion.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(classes, ev["confusion"])):
        confusion.add_row(name, *(f"[bold green]{n}[/]" if i == j else str(n) for j, n in enumerate(row)))
    return [metrics, confusion]


def predictions_table(rows: list[Prediction]) -> Table:
    table = Table(title=f"{len(rows)} image(s)", title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("predicted")
    table.add_column("confidence", justify="right")
    for row in rows:
        if "error" in row:
            table.add_row(safe(row["path"]), "[red]unreadable[/]", safe(row["error"]))
        else:
            table.add_row(safe(row["path"]), safe(row["label"]), pct(row["confidence"]))
    return table


def compare_table(result: CompareResult) -> Table:
    """Sorted by val accuracy, the best row starred; headers say which split each accuracy is on."""
    failed = any(row["status"] != "ok" for row in result["rows"])
    columns = [c for c in COMPARE_COLUMNS if c.key != "error" and (failed or c.key != "status")]
    note = interrupted_note(result)
    table = Table(title=f"compare on {safe(result['config']['data'])}: accuracies on the val split "
                        f"({safe(result['split_origin'])})", title_justify="left",
                  caption=f"[bold red]{safe(note)}[/]" if note else None)
    table.add_column("")
    for c in columns:
        text = c.kind == "text"
        table.add_column(c.title, justify="left" if text else "right", no_wrap=text)
    for n, row in enumerate(result["rows"]):
        ok = row["status"] == "ok"
        status = "ok" if ok else f"[red]failed: {safe(row['error'])}[/]"
        values = [safe(c.format(row[c.key])) if c.key != "status" else status for c in columns]
        best = n == 0 and ok
        table.add_row("★" if best else "", *values, style="bold green" if best else None)
    return table


class FetchBar:
    """fetch's progress callbacks (fetch.FetchProgress) drawn as a rich bar: bytes, speed, time left."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal)
        self.task: Any = None

    def start(self, total: int | None, description: str) -> None:
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task(description, total=total)
        else:  # the next step, or a download that restarts from zero
            self.bar.reset(self.task, total=total, description=description)

    def advance(self, n: int) -> None:
        self.bar.advance(self.task, n)

    def done(self) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.task = None
        self.bar.stop()

    def note(self, text: str) -> None:
        self.bar.console.print(text, markup=False, highlight=False)


def fetch_table(summaries: list[Any]) -> Table:
    splits = [s for s in ("train", "val", "test", "unlabeled") if any(s in d.splits for d in summaries)]
    cached = [d.name for d in summaries if d.cached]
    table = Table(title="datasets", caption=f"already complete, nothing done: {', '.join(cached)}" if cached else None)
    table.add_column("dataset", no_wrap=True)
    table.add_column("classes")
    for col in (*splits, "skipped"):
        table.add_column(col, justify="right")
    table.add_column("location", overflow="fold")
    for d in summaries:
        table.add_row(safe(d.name), safe(", ".join(d.classes)), *(str(d.splits.get(s, "-")) for s in splits),
                      str(len(d.skipped)), safe(d.path))
    return table


def lr_plot(curve: LrCurve, width: int = 60, height: int = 12) -> str:
    """The smoothed loss against the head's lr (log scale) in text, the suggested lr marked with a column of |."""
    kept = shown_steps(curve)
    xs = [math.log10(curve["lrs"][i]) for i in kept]
    ys = [curve["smoothed"][i] for i in kept]
    if len(xs) < 2:
        return "(too few steps to plot)"
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * width for _ in range(height)]

    def column(x: float) -> int:
        return round((x - x0) / ((x1 - x0) or 1) * (width - 1))

    if curve["suggested_lr"]:
        col = column(math.log10(curve["suggested_lr"]))
        for row in grid:
            row[min(width - 1, max(0, col))] = "|"
    for x, y in zip(xs, ys):
        grid[round((y1 - y) / ((y1 - y0) or 1) * (height - 1))][column(x)] = "•"
    label = max(len(f"{y1:.3g}"), len(f"{y0:.3g}"))
    lines = [f"{(f'{y1:.3g}' if r == 0 else f'{y0:.3g}' if r == height - 1 else ''):>{label}} ┤{''.join(row)}"
             for r, row in enumerate(grid)]
    ticks = f"{10 ** x0:.0e}".ljust(width // 2) + f"{10 ** x1:.0e}".rjust(width - width // 2)
    lines.append(" " * label + " └" + "─" * width)
    lines.append(" " * (label + 2) + ticks)
    return "\n".join(lines)


def lr_find_table(result: LrFindResult) -> Table:
    table = Table(title=safe(f"lr-find on {result['config']['data']} ({result['config']['backbone']})"),
                  title_justify="left")
    for col in ("strategy", "suggested --lr", "lowest loss at", "ended"):
        table.add_column(col, justify="left" if col in ("strategy", "ended") else "right")
    for curve in result["curves"]:
        table.add_row(curve["strategy"], fmt(curve["suggested_lr"]), fmt(curve["min_loss_lr"]), curve["ended"])
    return table
