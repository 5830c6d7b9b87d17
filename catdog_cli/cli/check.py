"""`catdog check DATA`: parse, call checks.runner, render the findings. Exit 0 when nothing reaches --fail-on,
1 when something does (or on an error), 2 on a usage error."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from catdog_cli.cli.fetch import fetch_first
from catdog_cli.cli.options import (
    DEFAULT,
    MODEL,
    NAMED_DATA_HELP,
    OUTPUT,
    Backbone,
    Device,
    ImageSize,
    Json,
    Weights,
)
from catdog_cli.cli.output import Output
from catdog_cli.cli.progress import safe
from catdog_cli.core.findings import FAIL_ON, CheckResult, at_or_above
from catdog_cli.core.formatting import fmt, pct, printable

SHOWN = 10  # rows of each list in the terminal; --json and --report have them all


def _table(title: str, head: list[str], rows: list[list[str]], total: int) -> Table:
    more = f" (top {SHOWN} of {total})" if total > SHOWN else ""
    table = Table(title=f"{title}{more}", title_justify="left", title_style="bold")
    for h in head:
        table.add_column(h, overflow="fold")
    for row in rows[:SHOWN]:
        table.add_row(*(safe(c) for c in row))
    return table


def _where(ref: dict) -> str:
    return f"{ref['split']}/{ref['label']}" if ref["label"] is not None else ref["split"]


def show(result: CheckResult, console: Console) -> None:
    """The top of each list, then one line of totals."""
    classes = result["classes"]
    balance = Table(title="Images per class", title_justify="left", title_style="bold")
    for h in ("split", *classes, "largest / smallest"):
        balance.add_column(safe(h), justify="left" if h == "split" else "right")
    for split, counts in result["counts"].items():
        balance.add_row(split, *(fmt(counts[c], "int") for c in classes), f"{result['imbalance'][split]:.2f}x")
    console.print(balance)
    for split, missing in result["missing"].items():
        console.print(f"[yellow]{split} has no image of {safe(', '.join(missing))}[/]")
    dups = result["duplicates"]
    if dups:
        rows = [
            [
                ("LEAK " if d["leak"] else "") + d["kind"],
                f"{d['a']['path']} ({_where(d['a'])})",
                f"{d['b']['path']} ({_where(d['b'])})",
                "same bytes" if d["similarity"] is None else f"cosine {d['similarity']:.3f}",
            ]
            for d in dups
        ]
        console.print(_table("Duplicates and leaks", ["kind", "file", "same picture as", "how close"], rows, len(dups)))
    check = result["label_check"]
    if check["ran"]:
        likely = [s for s in result["labels"] if s["confident"]]
        rows = [[s["path"], s["given"], s["suspected"], pct(s["probability"])] for s in likely]
        if rows:
            console.print(
                _table("Likely label errors", ["file", "given", "looks like", "probability"], rows, len(rows))
            )
        if weaker := len(result["labels"]) - len(likely):
            console.print(f"{weaker} more image(s) the probe out-votes, less surely (info; --json lists them)")
    else:
        console.print(f"label check not run: {safe(check.get('why_not', ''))}", highlight=False)
    if result["problems"]:
        rows = [[p["path"], p["kind"], p["detail"]] for p in result["problems"]]
        console.print(_table("Images that should not be there", ["file", "what", "detail"], rows, len(rows)))
    _totals(result, console)


def _totals(result: CheckResult, console: Console) -> None:
    """Notes, one line of totals, and the files written."""
    check = result["label_check"]
    for note in result["notes"]:
        console.print(f"[yellow]{safe(note)}[/]")
    f = result["findings"]
    probe = f", probe out-of-fold accuracy {pct(check['oof_accuracy'])}" if "oof_accuracy" in check else ""
    console.print(
        f"{fmt(result['images'], 'int')} images: [bold]{f['error']} error(s), {f['warning']} warning(s)[/] "
        f"({fmt(result['seconds']['total'], 'sec')}{probe})",
        highlight=False,
    )
    if "report" in result:
        console.print(f"report: {printable(result['report'])}", markup=False)
    if "cleaned" in result:
        counts = ", ".join(f"{n} {decision}" for decision, n in result["cleaned"]["decisions"].items())
        console.print(f"cleaned copy: {printable(result['cleaned']['out'])} ({counts}; decisions.csv)", markup=False)


def _level(value: str) -> str:
    if value not in FAIL_ON:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(FAIL_ON)}")
    return value


def check(
    data: str = typer.Argument(..., help=f"A dataset folder, {NAMED_DATA_HELP}"),
    backbone: Backbone = DEFAULT["backbone"],
    weights: Weights = DEFAULT["weights"],
    image_size: ImageSize = None,
    device: Device = DEFAULT["device"],
    features: bool = typer.Option(
        True,
        help="--no-features: no backbone (fast): near-duplicates by perceptual hash only, no label check.",
        rich_help_panel=MODEL,
    ),
    folds: int = typer.Option(
        5, min=2, max=20, help="Cross-validation folds of the label check.", rich_help_panel=MODEL
    ),
    seed: int = typer.Option(0, min=0, help="Seed of the label check's folds.", rich_help_panel=MODEL),
    fail_on: str = typer.Option(
        "error",
        callback=_level,
        help=f"Exit 1 when a finding is at this level or worse: {', '.join(FAIL_ON)}.",
        rich_help_panel=OUTPUT,
    ),
    report: Path | None = typer.Option(
        None, help="Also write an HTML report (pictures side by side) here.", rich_help_panel=OUTPUT
    ),
    csv_file: Path | None = typer.Option(
        None, "--csv", help="Also write every finding, a row each, to this new CSV.", rich_help_panel=OUTPUT
    ),
    out: Path | None = typer.Option(
        None,
        help="Write a cleaned copy here (a new folder): duplicates, leaks and placeholders dropped, likely "
        "label errors in _review/, decisions.csv. The data folder is never changed.",
        rich_help_panel=OUTPUT,
    ),
    relabel: bool = typer.Option(
        False, help="--out: move likely label errors to the class they look like instead.", rich_help_panel=OUTPUT
    ),
    json_output: Json = False,
) -> None:
    """What is wrong with a dataset before it costs a training run: leaks (the same picture in train and val)
    and duplicates, likely label errors, unreadable files and placeholders, class balance. Reads only."""
    from catdog_cli.core.paths import check_new_file, resolve_data
    from catdog_cli.core.validate import check_options, check_weights

    output = Output(json_output)
    fetch_first(data, output)
    resolve_data(data)  # before torch loads, before any work
    check_options({"device": device, "image_size": image_size, "seed": seed})
    if features:
        check_options({"backbone": backbone})
        check_weights(weights)
    for path, option in ((report, "--report"), (csv_file, "--csv")):
        if path is not None:
            check_new_file(path, option)
    if out is not None:
        from catdog_cli.checks.clean import check_out

        check_out(out, resolve_data(data))
    from catdog_cli.checks.runner import CheckOptions, check_dataset

    options = CheckOptions(backbone, weights, image_size, device, features, folds, seed)
    with output.events() as events:
        result = check_dataset(data, options, events, report, csv_file, out, relabel)
    if output.json:
        output.emit(result)
    else:
        show(result, output.console)
    if any(at_or_above(level, fail_on) for level, n in result["findings"].items() if n):
        raise typer.Exit(1)
