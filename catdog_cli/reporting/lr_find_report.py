"""The report of an lr-find: the loss against the learning rate per strategy, and the suggestions."""

from __future__ import annotations

from html import escape
from pathlib import Path

from catdog_cli.core.formatting import fmt
from catdog_cli.core.records import (
    LrCurve,
    LrFindResult,
    shown_steps,
)
from catdog_cli.reporting.html import figure_html, html_table, page, section, write_page
from catdog_cli.reporting.run_report import setup_section
from catdog_cli.reporting.svg import Axis, Point, Series, plot

# ---------------------------------------------------------------- lr-find


def _lr_chart(curve: LrCurve) -> str:
    """Loss against the head's lr (log scale): each step's loss dashed, the smoothed curve solid, the suggestion
    marked; the blown-up tail is left off (records.shown_steps)."""
    kept, lrs = shown_steps(curve), curve["lrs"]
    raw = Series(
        "loss",
        [Point(lrs[i], curve["losses"][i], f"lr {fmt(lrs[i])}: loss {fmt(curve['losses'][i])}") for i in kept],
        7,
        dashed=True,
    )
    smooth = Series(
        "smoothed",
        [
            Point(lrs[i], curve["smoothed"][i], f"lr {fmt(lrs[i])}: smoothed loss {fmt(curve['smoothed'][i])}")
            for i in kept
        ],
        0,
    )
    suggested = curve.get("suggested_lr")
    rule = (suggested, f"suggested {fmt(suggested)}") if suggested else None
    return plot(
        f"lr-{curve['strategy']}", [raw, smooth], Axis("learning rate (head)", log=True), Axis("loss"), rule=rule
    )


def write_lr_find_report(result: LrFindResult, path: Path) -> Path:
    """lr-find's curves, one chart per strategy, with the suggested --lr of each."""
    cfg = result.get("config") or {}
    rows = [
        [escape(c["strategy"]), fmt(c.get("suggested_lr")), fmt(c.get("min_loss_lr")), escape(c["ended"])]
        for c in result["curves"]
    ]
    table = html_table(["strategy", "suggested --lr", "lowest loss at", "ended"], rows, [False, True, True, False])
    charts = [
        figure_html(f"{c['strategy']}", _lr_chart(c), [("loss per step", 7, "dash"), ("smoothed", 0, "")])
        for c in result["curves"]
    ]
    sections = [
        section(
            "Suggested learning rates",
            table,
            '<p class="muted">Halfway down the longest fall of the smoothed loss. With discriminative '
            "and freeze-unfreeze the backbone learns at this rate / --lr-ratio.</p>",
        ),
        section("Loss against learning rate", f'<div class="figs">{"".join(charts)}</div>'),
        setup_section(cfg.items(), result.get("versions")),
    ]
    subtitle = f"data <code>{escape(str(cfg.get('data', '?')))}</code> · {escape(str(cfg.get('backbone', '')))}"
    return write_page(page("catdog lr-find", subtitle, sections), path)
