"""`catdog runs`: past runs as a table, or one run's summary and where its files are."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from catdog_cli.cli.options import Json
from catdog_cli.cli.output import Output
from catdog_cli.cli.progress import safe
from catdog_cli.core.formatting import fmt
from catdog_cli.tracking.listing import SORTS, RunEntry, find_run, find_runs, select

STATUS_STYLE = {"finished": "green", "early-stopped": "green", "interrupted": "yellow", "running": "cyan"}
COLUMNS = ("name", "command", "date", "data", "backbone", "strategy", "epochs", "best_val_acc", "status")


def _cell(entry: RunEntry, key: str) -> str:
    value = entry[key]  # type: ignore[literal-required]
    if key == "best_val_acc":
        return "—" if value is None else fmt(value, "pct")
    if key == "status":
        return f"[{STATUS_STYLE.get(value, 'red')}]{value}[/]"
    return "—" if value is None else safe(value)


def runs_table(entries: list[RunEntry], root: Path) -> Table:
    table = Table(title=f"runs in {safe(root)}", title_justify="left")
    for key in COLUMNS:
        heading = "best val acc" if key == "best_val_acc" else key
        table.add_column(heading, justify="right" if key in ("epochs", "best_val_acc") else "left")
    for entry in entries:
        table.add_row(*(_cell(entry, key) for key in COLUMNS))
    return table


def run_details(entry: RunEntry) -> Table:
    table = Table(show_header=False, box=None)
    for key in (*COLUMNS, "path"):
        table.add_row(key.replace("_", " "), _cell(entry, key))
    table.add_row("files", safe(", ".join(entry["files"]) or "none"))
    return table


def runs(
    name: str | None = typer.Argument(None, help="Show this run only (its folder under the runs folder: train3)."),
    root: Path = typer.Option(Path("runs"), "--root", help="The folder the runs are in."),
    data: str | None = typer.Option(None, help="Only runs whose data's name contains this."),
    backbone: str | None = typer.Option(None, help="Only runs whose backbone contains this."),
    strategy: str | None = typer.Option(None, help="Only runs whose strategy contains this."),
    sort: str = typer.Option("date", help=f"{', '.join(SORTS)} (date: oldest first; acc: best first)."),
    json_output: Json = False,
) -> None:
    """List past runs (train, compare, lr-find) with their data, model, best val accuracy and status (finished,
    early-stopped, interrupted, running, failed), read from the records in their folders."""
    output = Output(json_output)
    found = select(find_runs(root), data, backbone, strategy, sort)
    shown = find_run(found, name) if name is not None else found
    if output.json:
        output.emit(shown)
    elif isinstance(shown, list):
        output.console.print(runs_table(shown, root) if shown else f"no runs in {safe(root)}")
    else:
        output.console.print(run_details(shown))
