"""Rich rendering of what the engine returns: progress bars, per-epoch lines, tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group, RenderableType
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
from rich.text import Text

from catdog_cli.events import Events
from catdog_cli.formatting import fmt, pct, printable
from catdog_cli.records import (
    COMPARE_COLUMNS,
    Calibration,
    CompareResult,
    CompareRow,
    Coverage,
    EpochRecord,
    EvaluateResult,
    ExportResult,
    Prediction,
    TrainResult,
    interrupted_note,
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
        self.console.print(
            f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} acc {pct(record['train_acc'])}  "
            f"[bold]val loss {record['val_loss']:.4f} acc {pct(record['val_acc'])}[/]  "
            f"{record['seconds']:.1f}s  {record['images_per_sec']:.0f} img/s"
        )

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
        ("epochs", str(result["epochs"])),
        ("best val accuracy", f"{pct(result['best_val_acc'])} (epoch {result['best_epoch']})"),
    ]
    if "test" in result:
        rows.append(("test accuracy (best.pt)", pct(result["test"]["accuracy"])))
    if "calibration" in result:
        rows.append(("calibration (val)", calibration_line(result["calibration"])))
    if result["skipped"]:
        rows.append(("skipped files", str(len(result["skipped"]))))
    rows.append(("saved in", safe(result["out"])))
    for row in rows:
        table.add_row(*row)
    return table


def evaluation_tables(ev: EvaluateResult) -> list[RenderableType]:
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
    return [metrics, confusion, *([confidence_table(ev)] if "calibration" in ev else [])]


def calibration_line(cal: Calibration) -> str:
    """'T = 1.42: expected calibration error 6.1% -> 1.3%' (or why T stayed 1)."""
    line = (f"T = {cal['temperature']:.3g}: expected calibration error {pct(cal['ece_before'])} -> "
            f"{pct(cal['ece_after'])}")
    return line + (f" (T not fitted: {cal['not_fitted']})" if "not_fitted" in cal else "")


def selective_line(c: Coverage) -> str:
    """'99.6% on the 92.0% of images it is sure about (confidence >= 0.9)'."""
    if c["accuracy"] is None:
        return f"no image reaches confidence {c['threshold']:g}"
    return (f"{pct(c['accuracy'])} on the {pct(c['coverage'])} of images it is sure about "
            f"(confidence >= {c['threshold']:g})")


def confidence_table(ev: EvaluateResult) -> Group:
    """Calibration on the evaluated split, and accuracy against coverage at a few confidence thresholds."""
    cal = ev["calibration"]
    note = " (measured on the images T was fitted on: optimistic)" if cal.get("in_sample") else ""
    lines: list[RenderableType] = [Text(f"confidence on {cal['split']}: {calibration_line(cal)}{note}")]
    if "selective" in ev:
        lines.append(Text(f"with --min-confidence {ev['selective']['threshold']:g}: accuracy "
                          f"{selective_line(ev['selective'])}", style="bold"))
    table = Table(title="accuracy on the images it is sure about", title_justify="left")
    for col in ("confidence >=", "images", "coverage", "accuracy"):
        table.add_column(col, justify="right")
    for c in cal["coverage"]:
        table.add_row(f"{c['threshold']:g}", str(c["images"]), pct(c["coverage"]), pct(c["accuracy"]))
    return Group(table, *lines)


def predictions_table(rows: list[Prediction]) -> Table:
    """One row per image; unsure ones (--min-confidence) marked in yellow; the runners-up with --top-k."""
    unsure = sum(bool(r.get("unsure")) for r in rows)
    table = Table(title=f"{len(rows)} image(s)" + (f", {unsure} unsure" if unsure else ""), title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("predicted")
    table.add_column("confidence", justify="right")
    top = any("top" in r for r in rows)
    if top:
        table.add_column("next most likely")
    for row in rows:
        if "error" in row:
            table.add_row(safe(row["path"]), "[red]unreadable[/]", safe(row["error"]))
            continue
        label = safe(row["label"]) + (" [yellow](unsure)[/]" if row.get("unsure") else "")
        cells = [safe(row["path"]), label, pct(row["confidence"])]
        if top:
            cells.append(", ".join(f"{safe(t['label'])} {pct(t['confidence'])}" for t in row.get("top", [])[1:]))
        table.add_row(*cells)
    return table


def export_summary(result: ExportResult) -> Table:
    meta, parity = result["metadata"], result["parity"]
    table = Table(title=f"exported {safe(result['checkpoint'])} ({result['format']})", show_header=False,
                  title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    shape = "x".join(str(d) for d in meta["input"]["shape"])
    rows = [
        ("file", f"{result['out']} ({fmt(result['bytes'] / 1e6)} MB)"),
        ("input", f"{meta['input']['name']}: {meta['input']['dtype']} {meta['input']['channels']} "
                  f"{meta['input']['layout']} ({shape})"),
        ("before the input", meta["preprocessing"]["steps"]),
        ("inside", meta["preprocessing"]["in_graph"] + f", T = {meta['temperature']:.3g}"),
        ("output", f"{meta['output']['name']} ({', '.join(meta['classes'])})"),
        ("parity", f"{parity['images']} images of {parity['source']}: largest probability difference "
                   f"{parity['max_abs_diff']:.1e} (tolerance {parity['tolerance']:.0e}), labels agree on "
                   f"{pct(parity['label_agreement'])}"),
    ]
    for row in rows:
        table.add_row(*(safe(cell) for cell in row))
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
