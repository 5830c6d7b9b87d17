"""The report of a compare grid: the results table, accuracy against speed, each cell's curves."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from catdog_cli.core.compare_rows import COMPARE_COLUMNS, interrupted_note, random_init_note, sort_rows
from catdog_cli.core.formatting import fmt
from catdog_cli.core.records import CompareResult, CompareRow
from catdog_cli.reporting.html import card, figure_html, html_table, page, section, write_page
from catdog_cli.reporting.run_report import history_curve, setup_section
from catdog_cli.reporting.svg import Axis, Point, Series, plot

# ---------------------------------------------------------------- compare


METRIC_COLUMNS = [c for c in COMPARE_COLUMNS if c.kind != "text"]  # beside the cell's name, in table order


def _results_table(rows: list[CompareRow], best: CompareRow | None) -> str:
    """Ranked cells; a failed cell's reason spans the columns its numbers would have filled.

    Backbone and strategy share the first column, one above the other, so a phone shows val acc beside them.
    Without a labeled test split there is no test column (it would be a column of dashes).
    """
    has_test = any(r.get("test_acc") is not None for r in rows)
    columns = [c for c in METRIC_COLUMNS if has_test or c.key != "test_acc"]
    head = ["cell", *(c.title for c in columns)]
    cells = []
    for r in rows:
        mark = "★ " if r is best else ""
        row = [f'{mark}{escape(str(r.get("backbone")))}<div class="muted">{escape(str(r.get("strategy")))}</div>']
        if r.get("status") == "ok":
            row += [c.format(r.get(c.key)) for c in columns]
        else:
            row.append(f'<span class="err">failed: {escape(r.get("error") or "no reason recorded")}</span>')
        cells.append(row)
    return html_table(head, cells, [False] + [True] * (len(head) - 1), ["best" if r is best else "" for r in rows])


def _scatter(
    caption: str, figure: str, ok: list[dict], best: dict | None, cost: tuple[str, str, Axis], colors: dict[str, int]
) -> str:
    """Val accuracy of each finished cell against a cost (key, fmt kind, axis); color: strategy, label: backbone
    (when there are several: with one, the title says which)."""
    key, kind, x = cost
    named = len({str(r.get("backbone")) for r in ok}) > 1
    series = []
    for strategy, color in colors.items():
        cells = [
            r for r in ok if str(r.get("strategy")) == strategy and None not in (r.get(key), r.get("best_val_acc"))
        ]
        points = [
            Point(r[key], r["best_val_acc"], label=str(r["backbone"]) if named else "", best=r is best,
                  tip=f"{r['backbone']} · {strategy}: val acc {fmt(r['best_val_acc'], 'pct')}, {fmt(r[key], kind)}")
            for r in cells
        ]  # fmt: skip
        series.append(Series(strategy, points, color, line=False))
    legend = [(s.name, s.color, "dot") for s in series if s.points]
    return figure_html(caption, plot(figure, series, x, Axis("val accuracy", percent=True)), legend)


def _cell_curves(rows: list[dict], colors: dict[str, int]) -> str:
    """Small multiples of each cell's val accuracy on shared axes, so speed of learning compares at a glance."""
    with_history = [r for r in rows if r.get("history")]
    curves = [
        history_curve(r["history"], "val_acc", "val acc", colors[str(r.get("strategy"))], "pct") for r in with_history
    ]
    accs = [p.y for s in curves for p in s.points if math.isfinite(p.y)]
    epochs = [p.x for s in curves for p in s.points]
    x = Axis("epoch", integer=True, include=(min(epochs), max(epochs)) if epochs else ())
    y = Axis("val accuracy", percent=True, include=(min(accs), max(accs)) if accs else ())
    figures = [
        figure_html(
            f"{r['backbone']} · {r['strategy']}" + ("" if r.get("status") == "ok" else " (failed)"),
            plot("curve", [series], x, y, width=320, height=200),
        )
        for r, series in zip(with_history, curves, strict=True)
    ]
    return f'<div class="figs small">{"".join(figures)}</div>'


def write_compare_report(result: CompareResult, path: Path) -> Path:
    """Report of a compare grid: ranked table, accuracy against trainable parameters and time, each cell's curve."""
    cfg = result.get("config") or {}
    rows = sort_rows(result.get("rows") or [])
    ok = [r for r in rows if r.get("status") == "ok"]
    best = ok[0] if ok and ok[0].get("best_val_acc") is not None else None
    colors = {s: i for i, s in enumerate(sorted({str(r.get("strategy")) for r in rows}))}
    cards = [
        card(
            "cells", fmt(len(rows), "int"), f"{fmt(len(ok), 'int')} finished · {fmt(len(rows) - len(ok), 'int')} failed"
        )
    ]
    if best:
        cards.append(
            card("best val accuracy", fmt(best["best_val_acc"], "pct"), f"{best['backbone']} · {best['strategy']}")
        )
    sections = [
        f'<div class="cards">{"".join(cards)}</div>',
        section(
            "Results",
            '<p class="muted">Accuracies are on the val split unless the column says test.</p>',
            _results_table(rows, best),
        ),
    ]
    if ok:
        params = ("params_trainable", "int", Axis("trainable parameters", log=True))
        seconds = ("train_seconds", "sec", Axis("training time (s)", include=(0,)))
        sections.append(
            section(
                "Trade-offs",
                '<div class="figs">',
                _scatter("Val accuracy vs trainable parameters", "params", ok, best, params, colors),
                _scatter("Val accuracy vs training time", "time", ok, best, seconds, colors),
                "</div>",
            )
        )
    if any(r.get("history") for r in rows):
        sections.append(section("Val accuracy per epoch, each cell", _cell_curves(rows, colors)))
    sections.append(setup_section(cfg.items(), result.get("versions")))
    subtitle = f"data <code>{escape(str(cfg.get('data', '?')))}</code> · {fmt(len(rows), 'int')} cells"
    if note := interrupted_note(result):
        subtitle += f" · <strong>{escape(note)}</strong>"
    if random := random_init_note(result):
        subtitle += f" · <strong>{escape(random)}</strong>"
    return write_page(page("catdog compare", subtitle, sections), path)
