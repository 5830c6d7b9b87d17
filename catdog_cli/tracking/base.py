"""The Tracker protocol, and `follow`: the CLI's Events, with every tracker asked for listening in.

A tracker hears a command's run in five beats: `begin` (the summary told before work starts), `epoch` (each
epoch's record), `cell`/`cell_done` (compare: a cell starts training, a cell's row is in) and `end` (the record
the command returns, once its files are written), or `fail` when the command ends in an error. What a tracker
needs to continue its run later (MLflow's run id) it returns from `begin`/`cell`, and it is kept in
OUT/tracking.json: a resumed run, or a compare finished into its own folder, picks it up from there (written at
the start, so even a run killed with -9 continues into the same tracked run).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from catdog_cli.core.events import Events
from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.records import CompareRow, EpochRecord, RunSummary
from catdog_cli.core.world import World
from catdog_cli.errors import CatdogError

STATE_FILE = "tracking.json"
# --log NAME: (the module of its tracker, the library it needs, the extra that installs it)
BACKENDS = {
    "mlflow": ("catdog_cli.tracking.mlflow", "mlflow", "mlflow"),
    "tensorboard": ("catdog_cli.tracking.tensorboard", "tensorboard", "tensorboard"),
}


class Tracker(Protocol):
    """One experiment tracker's side of a command's run; every method may raise (a server gone): the caller
    then drops the tracker with one warning."""

    name: str

    def begin(self, command: str, summary: RunSummary, out: Path | None, saved: dict[str, Any]) -> dict[str, Any]:
        """The run starts, or continues (`saved`: what this tracker kept last time); returns what to keep."""

    def epoch(self, record: EpochRecord) -> None: ...

    def cell(self, summary: RunSummary) -> dict[str, Any]:
        """compare: a cell starts training (its own summary); returns what to keep."""

    def cell_done(self, row: CompareRow) -> None: ...

    def end(self, result: dict[str, Any]) -> None:
        """The command's record (run.json, compare.json, lr_find.json), its files written."""

    def fail(self) -> None:
        """The command ended in an error."""


def row_metrics(row: CompareRow) -> dict[str, float]:
    """A compare cell's numbers, as every tracker logs them."""
    keys = ("best_val_acc", "best_epoch", "val_loss", "test_acc", "train_seconds", "images_per_sec")
    return {k: float(row[k]) for k in keys if row.get(k) is not None}  # type: ignore[literal-required]


def check(names: list[str]) -> None:
    """--log NAMES, before any work: each known, each library installed (one line naming the extra if not)."""
    for name in names:
        if name not in BACKENDS:
            raise CatdogError(f"--log {name}: no such tracker; use {' or '.join(BACKENDS)}")
        _, library, extra = BACKENDS[name]
        if importlib.util.find_spec(library) is None:
            raise CatdogError(f"--log {name} needs {library}: pip install 'catdog-cli[{extra}]'")


def read_state(out: Path | None) -> dict[str, Any]:
    """OUT/tracking.json as left by an earlier run into OUT; {} when there is none (or it is unreadable)."""
    if out is None:
        return {}
    try:
        state = json.loads((out / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class TrackingEvents(Events):
    """The CLI's Events, passed on unchanged, with every tracker told the same story."""

    def __init__(self, inner: Events, command: str, trackers: list[Tracker]):
        self.inner, self.command, self.trackers = inner, command, list(trackers)
        self.out: Path | None = None
        self.state: dict[str, Any] = {}
        self.started = False

    def _each(self, call: Callable[[Tracker], Any], keep: bool = False) -> None:
        """`call` on every tracker still listening; one that fails is dropped with one warning, and the run
        goes on. `keep`: what it returns is kept in OUT/tracking.json under its name."""
        for tracker in list(self.trackers):
            try:
                kept = call(tracker)
            except Exception as exc:  # a tracker's failure, whatever it is, must never end the run
                self.trackers.remove(tracker)
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                where = f"; its files in {self.out} are complete" if self.out is not None else ""
                self.inner.note(f"warning: --log {tracker.name} stopped ({reason}); the run goes on{where}")
                continue
            if keep and kept:
                self.state[tracker.name] = {**self.state.get(tracker.name, {}), **kept}
                if self.out is not None:
                    atomic_write_text(self.out / STATE_FILE, json.dumps(self.state, indent=2) + "\n")

    def summary(self, summary: RunSummary) -> None:
        self.inner.summary(summary)
        if self.started:  # compare tells each cell's summary too; lr-find each strategy's
            if self.command == "compare":
                self._each(lambda t: t.cell(summary), keep=True)
            return
        self.started = True
        self.out = Path(summary["out"]) if summary["out"] != "not saved" else None
        self.state = read_state(self.out)
        self._each(lambda t: t.begin(self.command, summary, self.out, self.state.get(t.name, {})), keep=True)

    def task(self, description: str, total: int, batch: int = 1) -> None:
        self.inner.task(description, total, batch)

    def advance(self, n: int = 1, **info: float) -> None:
        self.inner.advance(n, **info)

    def epoch(self, record: EpochRecord) -> None:
        self.inner.epoch(record)
        self._each(lambda t: t.epoch(record))

    def note(self, text: str) -> None:
        self.inner.note(text)

    def skip(self, path: Path, reason: str) -> None:
        self.inner.skip(path, reason)

    def cell(self, index: int, total: int, name: str) -> None:
        self.inner.cell(index, total, name)

    def cell_done(self, row: CompareRow) -> None:
        self.inner.cell_done(row)
        self._each(lambda t: t.cell_done(row))

    def finish(self, result: Any) -> None:
        """The command's record, once its files are written: the trackers log it and close their runs."""
        if self.out is None and result.get("out"):  # lr-find says where it saved only at the end
            self.out = Path(result["out"])
        if not self.started:  # it failed before its summary: there is nothing to log
            return
        self._each(lambda t: t.end(result))
        self.trackers = []


def open_trackers(names: list[str], uri: str | None, log_model: bool) -> list[Tracker]:
    """The trackers asked for, in the order given (each named once)."""
    trackers = []
    for name in dict.fromkeys(names):
        module = importlib.import_module(BACKENDS[name][0])
        trackers.append(module.make(uri=uri, log_model=log_model))
    return trackers


def check_options(names: list[str] | None, uri: str | None = None, log_model: bool = False) -> None:
    """--log, --log-uri and --log-model together, torch-free: the CLI asks before any work."""
    check(names or [])
    if (uri is not None or log_model) and "mlflow" not in (names or []):
        raise CatdogError("--log-uri and --log-model are MLflow's: add --log mlflow")


@contextmanager
def follow(
    names: list[str] | None, command: str, events: Events, uri: str | None = None, log_model: bool = False
) -> Iterator[TrackingEvents]:
    """`events` with the trackers named by --log listening in (under torchrun on rank 0 only); call `finish`
    with the command's record at the end. A command that ends in an error marks its tracked runs failed."""
    check_options(names, uri, log_model)
    trackers = open_trackers(names or [], uri, log_model) if World.from_env().main else []
    tracked = TrackingEvents(events, command, trackers)
    try:
        yield tracked
    except BaseException:
        tracked._each(lambda t: t.fail())
        raise
