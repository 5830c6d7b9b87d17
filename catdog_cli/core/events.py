"""What the engine tells its caller while it works; importable without torch, so the CLI starts fast."""

from __future__ import annotations

from pathlib import Path

from catdog_cli.core.records import CompareRow, EpochRecord, RunSummary


class Events:
    """What the engine tells its caller; the CLI draws progress bars from it. Does nothing by default."""

    def summary(self, summary: RunSummary) -> None:
        """What the run is about to do (data, model, strategy, device, output folder), before the work starts."""

    def task(self, description: str, total: int, batch: int = 1) -> None:
        """Work of `total` units starts (advance() counts them); a unit is `batch` images (a training step)."""

    def advance(self, n: int = 1, **info: float) -> None: ...

    def epoch(self, record: EpochRecord) -> None: ...

    def note(self, text: str) -> None: ...

    def skip(self, path: Path, reason: str) -> None:
        """A file left out: it is named once, with the reason."""
        self.note(f"skipped {path}: {reason}")

    def cell(self, index: int, total: int, name: str) -> None:
        """compare: cell `index` (0-based) of `total` starts."""

    def cell_done(self, row: CompareRow) -> None:
        """compare: a cell finished; `row` is its line of the table."""
