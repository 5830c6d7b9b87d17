"""Work in progress, drawn on stderr: the consoles, the summary before a run, the run's events as rich bars and
one line per epoch, and the fetch bar.

Off a terminal (a pipe, a file, a CI log) there are no progress bars and every event is one line, never
wrapped.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
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
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from catdog_cli.core.events import Events
from catdog_cli.core.formatting import fmt, lr_text, pct, printable, weights_text
from catdog_cli.core.records import (
    CompareRow,
    EpochRecord,
    RunSummary,
)

UNWRAPPED = 10_000  # a console's width off a terminal: wide enough that no line is ever broken


class Trimmed:
    """A renderable without the spaces that pad its lines to its width: in a log they are noise, and on a
    terminal narrower than a pipe's line they would wrap into blank lines."""

    def __init__(self, renderable: RenderableType):
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Segment]:
        for line in console.render_lines(self.renderable, options, pad=False):
            while line and not line[-1].control and not line[-1].text.strip():  # trailing blank segments
                line.pop()
            if line and not line[-1].control:
                last = line.pop()
                line.append(Segment(last.text.rstrip(), last.style))
            yield from line
            yield Segment.line()


def console(stderr: bool = False, quiet: bool = False) -> Console:
    """A console that wraps only on a terminal: rich would break lines at 80 columns in a pipe or a log file."""
    made = Console(stderr=stderr, quiet=quiet)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = UNWRAPPED
    return made


def safe(text: object) -> str:
    """A name from the user's files (a class, a path, a reason quoting one) as rich prints it verbatim: markup
    escaped (`[red]rouge` stays `[red]rouge`), non-UTF-8 bytes and control characters escaped."""
    return escape(printable(text))


class LogProgress:
    """Progress where no bar is drawn (a pipe, a log file, CI): a plain line every tenth of the work or every
    `every` seconds, whichever comes first, with the count, images per second and the time left. Work done within
    `quiet` seconds says nothing: its end is told anyway."""

    def __init__(
        self,
        line: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        every: float = 15.0,
        quiet: float = 5.0,
    ):
        self.line, self.clock, self.every, self.quiet = line, clock, every, quiet
        self.description, self.total, self.batch, self.done, self.shown = "", 0, 1, 0, 0
        self.start = self.last = 0.0

    def task(self, description: str, total: int, batch: int = 1) -> None:
        self.description, self.total, self.batch, self.done = description, total, batch, 0
        self.start = self.last = self.clock()
        self.shown = 0  # tenths of the work already told

    def advance(self, n: int) -> None:
        self.done += n
        if not self.total or self.done >= self.total:  # the task's own end is told by what follows it
            return
        now, tenths = self.clock(), self.done * 10 // self.total
        if now - self.start >= self.quiet and (tenths > self.shown or now - self.last >= self.every):
            self.shown, self.last = tenths, now
            self.line(self.status(now - self.start))

    def status(self, elapsed: float) -> str:
        """'epoch 2/10: step 12/40 (30%), 85.3 img/s, ETA 0:15'."""
        count = f"step {self.done}/{self.total}" if self.batch > 1 else f"{self.done}/{self.total}"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate else None
        left = f"{int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else "?"
        return (
            f"{self.description}: {count} ({100 * self.done // self.total}%), "
            f"{fmt(rate * self.batch, 'rate')} img/s, ETA {left}"
        )


class RichEvents(Events):
    """Engine events as the summary block, a transient progress bar (on a terminal; elsewhere a plain progress
    line now and then), one line per epoch, and yellow notes."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.log = None if console.is_terminal else LogProgress(self.line, clock)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
        self.current = None
        self.grid = None
        self.show_epochs = True
        self.summarized = False

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def line(self, text: str | Text) -> None:
        """One event: word-wrapped on a terminal, one unbroken line anywhere else (even with COLUMNS set)."""
        text = Text(text) if isinstance(text, str) else text  # never markup: names may hold [brackets]
        self.console.print(text, soft_wrap=not self.console.is_terminal, highlight=False)

    def summary(self, summary: RunSummary) -> None:
        if self.summarized and summary["kind"] == "train":  # compare said it once for the grid; not per cell
            return
        self.summarized = True
        self.console.print(run_summary(summary))

    def task(self, description: str, total: int, batch: int = 1) -> None:
        if self.log is not None:
            self.log.task(description, total, batch)
        if self.current is not None:
            self.progress.remove_task(self.current)
        self.current = self.progress.add_task(description, total=total, info="")

    def advance(self, n: int = 1, **info: float) -> None:
        if self.log is not None:
            self.log.advance(n)
        if self.current is None:
            return
        text = "  ".join(f"{k} {v:.3f}" for k, v in info.items())
        self.progress.update(self.current, advance=n, **({"info": text} if text else {}))

    def epoch(self, record: EpochRecord) -> None:
        if not self.show_epochs:  # compare prints a line per cell instead
            return
        self.line(Text.from_markup(epoch_line(record)))

    def note(self, text: str) -> None:
        self.line(Text(printable(text), style="yellow"))

    def cell_done(self, row: CompareRow) -> None:
        self.line(
            f"{printable(row['backbone'])} / {row['strategy']}: best val acc {pct(row['best_val_acc'])} "
            f"(epoch {row['best_epoch']}), {fmt(row['train_seconds'], 'sec')}"
        )

    def cell(self, index: int, total: int, name: str) -> None:
        self.show_epochs = False
        if not self.console.is_terminal:  # the progress bar is not drawn: say which cell starts
            self.line(f"cell {index + 1}/{total}: {printable(name)}")
        if self.grid is None:
            self.grid = self.progress.add_task("", total=total, info="")
        self.progress.update(self.grid, completed=index, description=f"[bold]cell {index + 1}/{total}: {safe(name)}[/]")


def epoch_line(record: EpochRecord) -> str:
    """Training and validation timed apart: img/s is training images over training time only."""
    ema = f"  EMA val acc {pct(record['ema_val_acc'])}" if "ema_val_acc" in record else ""
    return (
        f"epoch {record['epoch']:>3}  train loss {record['train_loss']:.4f} acc {pct(record['train_acc'])}  "
        f"[bold]val loss {record['val_loss']:.4f} acc {pct(record['val_acc'])}[/]{ema}  "
        f"train {record['seconds']:.1f}s ({fmt(record['images_per_sec'], 'rate')} img/s) + val "
        f"{record.get('val_seconds', 0.0):.1f}s"
    )


MAX_CLASSES_SHOWN = 12


def _classes(classes: list[str]) -> str:
    shown = ", ".join(classes[:MAX_CLASSES_SHOWN])
    return shown + (f", ... ({len(classes)} classes)" if len(classes) > MAX_CLASSES_SHOWN else "")


def _weights(summary: RunSummary) -> list[tuple[str, str]]:
    """One line for weights every backbone shares; otherwise one per backbone."""
    per_backbone = summary["weights"]
    if len(set(per_backbone.values())) <= 1:
        return [("weights", weights_text(next(iter(per_backbone.values()), "default")))]
    return [("weights" if n == 0 else "", f"{b}: {weights_text(w)}") for n, (b, w) in enumerate(per_backbone.items())]


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def run_summary(summary: RunSummary) -> RenderableType:
    """The block before the work: what is trained on what, how, where, and where the results go."""
    s = summary
    counts = ", ".join(f"{split} {fmt(n, 'int')}" for split, n in s["images"].items())
    rows = [
        ("data", s["data"]),
        ("", f"{len(s['classes'])} classes: {_classes(s['classes'])}"),
        ("", f"images: {counts} (val split: {s['split_origin']})"),
    ]
    size = f"{s['image_size']} px" if s["image_size"] else "each backbone's own image size"
    lr = f"lr {s['lr']:g}" if s["lr"] is not None else "each strategy's default lr"
    augment = "augmented" if s["augment"] else "no augmentation"
    if s["kind"] == "train":
        backbone, strategy = s["backbones"][0], s["strategies"][0]
        params = s["params"].get(backbone)
        counted = (
            f": {fmt(params['total'], 'params')} parameters, {fmt(params['trainable'], 'params')} trainable"
            if params
            else ""
        )
        title = f"catdog train: {backbone}, {strategy}"
        rows += [
            ("model", f"{backbone}, {weights_text(s['weights'][backbone])}{counted}"),
            ("training", f"{strategy}, {lr}, {_epochs(s['epochs'])}, batch {s['batch_size']}, {size}, {augment}"),
        ]
    elif s["kind"] == "lr-find":
        backbone, (start, end, steps) = s["backbones"][0], s["lr_range"]
        title = f"catdog lr-find: {backbone}, {', '.join(s['strategies'])}"
        rows += [
            ("model", f"{backbone}, {weights_text(s['weights'][backbone])}"),
            (
                "range test",
                f"the head's lr from {lr_text(start)} to {lr_text(end)} over {steps} steps, batch {s['batch_size']}, "
                f"{size}, {augment}",
            ),
        ]
    else:
        cells = len(s["backbones"]) * len(s["strategies"])
        title = f"catdog compare: {len(s['backbones'])} backbones x {len(s['strategies'])} strategies = {cells} cells"
        rows += [
            ("backbones", ", ".join(s["backbones"])),
            *_weights(s),
            (
                "training",
                f"{', '.join(s['strategies'])}; {lr}, {_epochs(s['epochs'])} per cell, "
                f"batch {s['batch_size']}, {size}, {augment}",
            ),
        ]
    if s["recipe"]:
        rows.append(("recipe", ", ".join(s["recipe"])))
    rows += [("device", f"{s['device']}, {s['precision']}"), ("output", s["out"])]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, Text(printable(value)))
    return Trimmed(Group(Text(printable(title), style="bold"), grid))


class FetchBar:
    """fetch's progress callbacks (fetch.FetchProgress) drawn as a rich bar: bytes, speed, time left."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        )
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
