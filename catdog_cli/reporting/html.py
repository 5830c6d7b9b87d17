"""Self-contained HTML reports for train, evaluate and compare runs.

Pure functions over the run's JSON dicts (run.json, compare.json): one file that opens offline in any
browser, on a phone too. Charts are inline SVG (reporting/svg.py), thumbnails are base64 JPEGs of a few KB,
there is no script, no stylesheet link, no external URL. Every number goes through `fmt`, so what the page
shows is exactly what the JSON holds, formatted one way.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from catdog_cli.core.formatting import fmt
from catdog_cli.core.paths import atomic_write_text
from catdog_cli.core.records import (
    COMPARE_COLUMNS,
    CompareResult,
    CompareRow,
    EvaluateResult,
    Heatmap,
    LrCurve,
    LrFindResult,
    TrainResult,
    interrupted_note,
    shown_steps,
    sort_rows,
)
from catdog_cli.data.balance import imbalance_note
from catdog_cli.reporting import overlays
from catdog_cli.reporting.svg import Axis, Point, Series, heatmap, plot

THUMB_PX = 96

CSS = """
:root{--bg:#fff;--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--card:#f6f8fa;--hi:#fff8c5;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0d1117;--fg:#e6edf3;--muted:#9198a1;--line:#30363d;
--card:#161b22;--hi:#3b2e00}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:1080px;margin:0 auto;padding:16px}
h1{font-size:1.35rem;margin:.2em 0 .1em;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.8em 0 .6em;padding-bottom:.2em;border-bottom:1px solid var(--line)}
p{margin:.4em 0}.muted{color:var(--muted)}code{overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,200px),1fr));gap:10px;margin-top:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px 12px}
.card b{display:block;font-size:1.5rem;font-variant-numeric:tabular-nums}
.figs{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,420px),1fr));gap:18px;align-items:start}
.figs.small{grid-template-columns:repeat(auto-fill,minmax(min(100%,250px),1fr))}
figure{margin:0;min-width:0}.wide{grid-column:1/-1}figcaption{font-weight:600;margin-bottom:2px}
svg.chart{display:block;max-width:100%;height:auto}
svg text{fill:var(--fg);font-size:12px}
svg .tick{fill:var(--muted)}
@media (max-width:520px){th,td{padding:4px 5px}}
.gridline{stroke:var(--line)}.axisline{fill:none;stroke:var(--muted)}
.rule{stroke:var(--muted);stroke-dasharray:3 3}.rule-label{fill:var(--muted)}
.line{fill:none;stroke:var(--c);stroke-width:2}.dash{stroke-dasharray:6 4}
.pt{fill:var(--c)}.pt.best{stroke:var(--fg);stroke-width:2}
.cell.diag{fill:#2563eb}.cell.off{fill:#dc2626}.cell{stroke:var(--bg)}svg text.count.inv{fill:#fff}
.c0{--c:#2563eb}.c1{--c:#ea580c}.c2{--c:#16a34a}.c3{--c:#9333ea}
.c4{--c:#0891b2}.c5{--c:#db2777}.c6{--c:#854d0e}.c7{--c:#64748b}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 14px;padding:0;margin:4px 0 0;font-size:.9rem}
.sw{display:inline-block;width:14px;height:4px;background:var(--c);margin-right:5px;vertical-align:middle}
.sw.dash{background:repeating-linear-gradient(90deg,var(--c) 0 6px,transparent 6px 10px)}
.sw.dot{width:10px;height:10px;border-radius:50%}
.scroll{overflow-x:auto;max-width:100%}.kv td:first-child{white-space:nowrap}.kv td+td{overflow-wrap:anywhere}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:.92rem}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--muted);font-weight:600}td.num,th.num{text-align:right;white-space:nowrap}
tr.best td{background:var(--hi);font-weight:600}.err{color:#dc2626}
details{margin-top:10px}summary{cursor:pointer;color:var(--muted)}
.thumbs{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.thumbs.heat{grid-template-columns:repeat(auto-fill,minmax(220px,1fr))}
.thumb{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px;font-size:.85rem}
.pair{display:flex;gap:6px;justify-content:center;margin-bottom:6px}
.thumb img,.thumb .missing{display:block;width:96px;min-height:96px;object-fit:contain}
.thumb .missing{border:1px dashed var(--muted);color:var(--muted);font-size:.7rem;padding:4px;overflow:hidden;
overflow-wrap:anywhere}
.thumb .wrong{color:#dc2626;font-weight:600}
"""

# History columns in display order: key, heading, how fmt shows it.
EPOCH_COLUMNS = [
    ("epoch", "epoch", "int"),
    ("train_loss", "train loss", "num"),
    ("train_acc", "train acc", "pct"),
    ("val_loss", "val loss", "num"),
    ("val_acc", "val acc", "pct"),
    ("ema_val_acc", "EMA val acc", "pct"),
    ("lr", "lr", "num"),
    ("seconds", "train time", "sec"),
    ("val_seconds", "val time", "sec"),
]


def _value(value: Any) -> str:
    """A config or version value as text: ints and floats through fmt, the rest as they are."""
    if isinstance(value, (bool, str)):
        return str(value)
    if value is None or isinstance(value, (int, float)):
        return fmt(value, "int" if isinstance(value, int) else "num")
    return json.dumps(value)


def _table(
    head: Sequence[str] | None, rows: Iterable[Sequence[str]], numeric: Sequence[bool], row_classes: Sequence[str] = ()
) -> str:
    """A scrollable table: cells are ready HTML, numbers right-aligned, a short row's last cell spans the rest."""
    thead = ""
    if head:
        ths = "".join(
            f"<th{' class=num' if num else ''}>{escape(h)}</th>" for h, num in zip(head, numeric, strict=True)
        )
        thead = f"<thead><tr>{ths}</tr></thead>"
    body = []
    for i, row in enumerate(rows):
        tds = [f"<td{' class=num' if num else ''}>{cell}</td>" for cell, num in zip(row[:-1], numeric, strict=False)]
        span = len(numeric) - len(row) + 1
        last = f" colspan={span}" if span > 1 else (" class=num" if numeric[-1] else "")
        tds.append(f"<td{last}>{row[-1]}</td>")
        cls = f' class="{row_classes[i]}"' if i < len(row_classes) and row_classes[i] else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    return f'<div class="scroll"><table>{thead}<tbody>{"".join(body)}</tbody></table></div>'


def _key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """Two-column table for config and versions; a long value (a weights path) wraps instead of being cut."""
    return f'<div class="kv">{_table(None, ([escape(k), escape(_value(v))] for k, v in pairs), [False, False])}</div>'


def _card(title: str, value: str, note: str = "") -> str:
    return f'<div class="card"><span class="muted">{escape(title)}</span><b>{escape(value)}</b>{escape(note)}</div>'


def _figure(caption: str, body: str, legend: Sequence[tuple[str, int, str]] = (), wide: bool = False) -> str:
    """A chart or table with its caption; legend items are (name, color, swatch style), in HTML so they wrap."""
    items = "".join(
        f'<li><span class="sw c{color} {style}"></span>{escape(name)}</li>' for name, color, style in legend
    )
    return (
        f"<figure{' class=wide' if wide else ''}><figcaption>{escape(caption)}</figcaption>{body}"
        + (f'<ul class="legend">{items}</ul>' if items else "")
        + "</figure>"
    )


def _page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    body = "".join(sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{escape(title)}</h1><p class="muted">{subtitle}</p>{body}</main></body></html>\n'
    )


def _section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def _write(html: str, path: Path) -> Path:
    """Atomically, so a crash never leaves a half report where the user expects a whole one."""
    atomic_write_text(path, html)
    return Path(path)


def _open_upright(path: str | Path) -> Image.Image | None:
    """The image, upright and RGB, decoded at about thumbnail size; None when it cannot be read as an image."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (THUMB_PX, THUMB_PX))
            return ImageOps.exif_transpose(im).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _jpeg_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=70, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(path: str | Path) -> str | None:
    """A few-KB JPEG data: URI of the image, upright and RGB; None when the file cannot be read as an image."""
    image = _open_upright(path)
    if image is None:
        return None
    image.thumbnail((THUMB_PX, THUMB_PX))
    return _jpeg_uri(image)


def heatmap_uri(path: str | Path, heatmap: Heatmap) -> str | None:
    """The crop the model saw, colored by where it looked (overlays.py), as a few-KB JPEG data: URI."""
    image = _open_upright(path)
    if image is None:
        return None
    return _jpeg_uri(overlays.overlay(overlays.model_view(image, heatmap["crop"]), heatmap["grid"], THUMB_PX))


# ---------------------------------------------------------------- train / evaluate


def _curve(history: list[dict], key: str, name: str, color: int, kind: str, dashed: bool = False) -> Series:
    points = [
        Point(h["epoch"], h[key], f"epoch {h['epoch']}: {name} {fmt(h[key], kind)}")
        for h in history
        if h.get(key) is not None
    ]
    return Series(name, points, color, dashed=dashed)


def _curves(run: dict) -> str:
    """Loss and accuracy per epoch, train dashed and val solid, with the best epoch marked."""
    history = run["history"]
    best = run.get("best_epoch")
    rule = (best, "best") if best is not None else None
    charts = []
    for figure, caption, key, kind in (
        ("loss", "Loss per epoch", "loss", "num"),
        ("accuracy", "Accuracy per epoch", "acc", "pct"),
    ):
        series, legend = [], []
        for color, split in enumerate(("train", "val")):
            curve = _curve(history, f"{split}_{key}", f"{split} {key}", color, kind, dashed=split == "train")
            series.append(curve)
            if curve.points:
                legend.append((f"{split} split", color, "dash" if curve.dashed else ""))
        svg = plot(figure, series, Axis("epoch", integer=True), Axis(figure, percent=kind == "pct"), rule=rule)
        charts.append(_figure(caption, svg, legend))
    present = [c for c in EPOCH_COLUMNS if any(c[0] in h for h in history)]
    table = _table(
        [heading for _, heading, _ in present],
        ([fmt(h.get(key), kind) for key, _, kind in present] for h in history),
        [True] * len(present),
    )
    return _section(
        "Training curves",
        f'<div class="figs">{"".join(charts)}</div>',
        f"<details><summary>Per-epoch numbers</summary>{table}</details>",
    )


def _evaluation(run: dict) -> str:
    """Confusion heat map beside the per-class table, both on the split the evaluation names."""
    ev = run["evaluation"]
    split = ev.get("split", "?")
    confusion, per_class = ev.get("confusion") or [], ev.get("per_class") or []
    classes = run.get("classes") or [r["class"] for r in per_class] or [str(i) for i in range(len(confusion))]
    parts = []
    if confusion:
        # Past a dozen or so classes the matrix needs the whole row to stay legible.
        svg = heatmap("confusion", confusion, classes)
        parts.append(_figure(f"Confusion matrix ({split} split)", svg, wide=len(classes) > 16))
    if per_class:
        table = _table(
            ["class", "precision", "recall", "F1", "images"],
            (
                [
                    escape(str(r["class"])),
                    fmt(r.get("precision"), "pct"),
                    fmt(r.get("recall"), "pct"),
                    fmt(r.get("f1"), "pct"),
                    fmt(r.get("support"), "int"),
                ]
                for r in per_class
            ),
            [False, True, True, True, True],
        )
        parts.append(_figure(f"Per class ({split} split)", table))
    return _section("Where it goes wrong", f'<div class="figs">{"".join(parts)}</div>')


def _reliability(cal: dict) -> str:
    """Reliability diagram: each confidence bin's accuracy against its mean confidence, before and after the
    temperature; on the diagonal, confidence means what it says."""
    series = []
    for key, name, color in (
        ("reliability_before", "softmax (T = 1)", 1),
        ("reliability_after", f"calibrated (T = {fmt(cal['temperature'])})", 0),
    ):
        points = [
            Point(
                b["confidence"],
                b["accuracy"],
                f"{name}, confidence {fmt(b['lo'], 'pct')}–{fmt(b['hi'], 'pct')}: {fmt(b['count'], 'int')} "
                f"images, mean confidence {fmt(b['confidence'], 'pct')}, accuracy {fmt(b['accuracy'], 'pct')}",
            )
            for b in cal.get(key) or []
        ]
        series.append(Series(name, points, color))
    lo = min((b["lo"] for s in ("reliability_before", "reliability_after") for b in cal.get(s) or []), default=0.0)
    diagonal = Series("perfectly calibrated", [Point(lo, lo, "perfectly calibrated"), Point(1, 1, "")], 7, dashed=True)
    svg = plot(
        "reliability",
        [diagonal, *series],
        Axis("confidence", percent=True, include=(lo, 1), limit=(0, 1)),
        Axis("accuracy", percent=True, include=(lo, 1), limit=(0, 1)),
    )
    legend = [(s.name, s.color, "dash" if s.dashed else "") for s in (*series, diagonal)]
    return _figure(f"Reliability ({cal.get('split', '?')} split)", svg, legend)


def _calibration(run: dict) -> str:
    """How far confidence can be trusted: ECE before and after the temperature, the reliability diagram, and
    accuracy against coverage at a few confidence thresholds (what --min-confidence trades)."""
    cal = run["calibration"]
    split = cal.get("split", "?")
    cards = [
        _card(
            "expected calibration error",
            f"{fmt(cal['ece_before'], 'pct')} → {fmt(cal['ece_after'], 'pct')}",
            f"{split} split, {fmt(cal.get('bins'), 'int')} bins, without → with the temperature",
        ),
        _card(
            "temperature",
            fmt(cal["temperature"]),
            cal.get("not_fitted")
            or f"fitted on {cal.get('fitted_on')}"
            f" split · NLL {fmt(cal.get('nll_before'))} → {fmt(cal.get('nll_after'))}",
        ),
    ]
    coverage = _table(
        ["confidence ≥", "images", "coverage", "accuracy"],
        (
            [fmt(c["threshold"]), fmt(c["images"], "int"), fmt(c["coverage"], "pct"), fmt(c["accuracy"], "pct")]
            for c in cal.get("coverage") or []
        ),
        [True] * 4,
    )
    note = (
        "Measured on the images the temperature was fitted on, so the calibrated figure is optimistic; "
        "evaluate a test split for an unbiased one."
        if cal.get("in_sample")
        else ""
    )
    return _section(
        "Confidence",
        f'<div class="cards">{"".join(cards)}</div>',
        f'<p class="muted">{escape(note)}</p>' if note else "",
        '<div class="figs">',
        _reliability(cal),
        _figure(f"Accuracy on the images it is sure about ({split} split)", coverage),
        "</div>",
    )


def _img(uri: str | None, path: str, alt: str) -> str:
    if uri is None:
        return f'<div class="missing">cannot read {escape(path)}</div>'
    return f'<img src="{uri}" alt="{escape(alt)}" width="{THUMB_PX}" height="{THUMB_PX}">'


def _top_losses(run: dict) -> str:
    """The most confidently wrong images, small and embedded, each beside the heat map of where the model looked
    for its wrong answer; an unreadable file becomes a labeled placeholder."""
    split = (run.get("evaluation") or {}).get("split", "val")
    cards = []
    for t in run["top_losses"]:
        path, name = str(t["path"]), Path(t["path"]).name
        pictures = _img(thumbnail_uri(path), path, name)
        if t.get("heatmap"):
            pictures += _img(heatmap_uri(path, t["heatmap"]), path, f"where the model looked in {name}")
        cards.append(
            f'<figure class="thumb" title="{escape(path)}"><div class="pair">{pictures}</div>'
            f"<div>true <b>{escape(str(t['true']))}</b></div>"
            f'<div class="wrong">predicted {escape(str(t["pred"]))}</div>'
            f'<div class="muted">confidence {fmt(t.get("confidence"), "pct")} · loss {fmt(t.get("loss"))}</div>'
            "</figure>"
        )
    heat = any(t.get("heatmap") for t in run["top_losses"])
    legend = (
        (
            " Beside each, the part the model saw, colored by where it looked for its answer (Grad-CAM: red "
            "most, blue least)."
        )
        if heat
        else ""
    )
    return _section(
        "Top losses",
        f'<p class="muted">The {len(cards)} most confidently wrong images of the {escape(str(split))} split, '
        f"worst first.{legend}</p>",
        f'<div class="thumbs{" heat" if heat else ""}">{"".join(cards)}</div>',
    )


def _setup(config: Iterable[tuple[str, Any]], versions: dict | None) -> str:
    """Configuration and versions, so a reader can tell exactly what produced these numbers."""
    return _section(
        "Setup",
        '<div class="figs">',
        _figure("Configuration", _key_values(config)),
        _figure("Versions", _key_values((versions or {}).items())),
        "</div>",
    )


def _train_cards(run: dict) -> str:
    cfg, ev, params = run.get("config") or {}, run.get("evaluation"), run.get("params") or {}
    cards = []
    if run.get("best_val_acc") is not None:
        of = f" of {fmt(cfg['epochs'], 'int')}" if cfg.get("epochs") is not None else ""
        cards.append(
            _card(
                "best val accuracy",
                fmt(run["best_val_acc"], "pct"),
                f"at epoch {fmt(run.get('best_epoch'), 'int')}{of}",
            )
        )
    if ev:
        cards.append(
            _card(
                f"accuracy on {ev.get('split', '?')} split",
                fmt(ev.get("accuracy"), "pct"),
                f"loss {fmt(ev.get('loss'))} · {fmt(ev.get('num_images'), 'int')} images"
                f" · checkpoint {ev.get('checkpoint', '?')}",
            )
        )
    if params:
        cards.append(
            _card("trainable parameters", fmt(params.get("trainable"), "int"), f"of {fmt(params.get('total'), 'int')}")
        )
    return f'<div class="cards">{"".join(cards)}</div>' + _run_notes(run)


def _run_notes(run: dict) -> str:
    """Why training ended, and an imbalance of the training classes worth knowing about."""
    notes = [f"Training ended: {run['ended']}."] if run.get("ended") else []
    counts = run.get("train_counts")
    note = imbalance_note(list(counts), list(counts.values())) if counts else None
    if note:
        notes.append(note[0].upper() + note[1:] + ": per-class recall is below.")
    return "".join(f'<p class="muted">{escape(n)}</p>' for n in notes)


def write_train_report(run: TrainResult | EvaluateResult, path: Path) -> Path:
    """Report of a train (or evaluate) run: curves, confusion, per-class scores, top losses, setup."""
    cfg = run.get("config") or {}
    kind = run.get("kind", "train")
    title = " · ".join(str(x) for x in (f"catdog {kind}", cfg.get("backbone"), cfg.get("strategy")) if x)
    subtitle = f"data <code>{escape(str(cfg.get('data', '?')))}</code>"
    if run.get("out"):
        subtitle += f" · run <code>{escape(str(run['out']))}</code>"
    sections = [_train_cards(run)]
    if run.get("history"):
        sections.append(_curves(run))
    if run.get("evaluation"):
        sections.append(_evaluation(run))
    else:
        sections.append(_section("Evaluation", '<p class="muted">This run holds no evaluation.</p>'))
    if run.get("calibration"):
        sections.append(_calibration(run))
    if run.get("top_losses"):
        sections.append(_top_losses(run))
    params = run.get("params") or {}
    config = [
        *cfg.items(),
        ("parameters total", params.get("total")),
        ("parameters trainable", params.get("trainable")),
    ]
    sections.append(_setup(config, run.get("versions")))
    return _write(_page(title, subtitle, sections), path)


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
    return _table(head, cells, [False] + [True] * (len(head) - 1), ["best" if r is best else "" for r in rows])


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
    return _figure(caption, plot(figure, series, x, Axis("val accuracy", percent=True)), legend)


def _cell_curves(rows: list[dict], colors: dict[str, int]) -> str:
    """Small multiples of each cell's val accuracy on shared axes, so speed of learning compares at a glance."""
    with_history = [r for r in rows if r.get("history")]
    curves = [_curve(r["history"], "val_acc", "val acc", colors[str(r.get("strategy"))], "pct") for r in with_history]
    accs = [p.y for s in curves for p in s.points if math.isfinite(p.y)]
    epochs = [p.x for s in curves for p in s.points]
    x = Axis("epoch", integer=True, include=(min(epochs), max(epochs)) if epochs else ())
    y = Axis("val accuracy", percent=True, include=(min(accs), max(accs)) if accs else ())
    figures = [
        _figure(
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
        _card(
            "cells", fmt(len(rows), "int"), f"{fmt(len(ok), 'int')} finished · {fmt(len(rows) - len(ok), 'int')} failed"
        )
    ]
    if best:
        cards.append(
            _card("best val accuracy", fmt(best["best_val_acc"], "pct"), f"{best['backbone']} · {best['strategy']}")
        )
    sections = [
        f'<div class="cards">{"".join(cards)}</div>',
        _section(
            "Results",
            '<p class="muted">Accuracies are on the val split unless the column says test.</p>',
            _results_table(rows, best),
        ),
    ]
    if ok:
        params = ("params_trainable", "int", Axis("trainable parameters", log=True))
        seconds = ("train_seconds", "sec", Axis("training time (s)", include=(0,)))
        sections.append(
            _section(
                "Trade-offs",
                '<div class="figs">',
                _scatter("Val accuracy vs trainable parameters", "params", ok, best, params, colors),
                _scatter("Val accuracy vs training time", "time", ok, best, seconds, colors),
                "</div>",
            )
        )
    if any(r.get("history") for r in rows):
        sections.append(_section("Val accuracy per epoch, each cell", _cell_curves(rows, colors)))
    sections.append(_setup(cfg.items(), result.get("versions")))
    subtitle = f"data <code>{escape(str(cfg.get('data', '?')))}</code> · {fmt(len(rows), 'int')} cells"
    if note := interrupted_note(result):
        subtitle += f" · <strong>{escape(note)}</strong>"
    return _write(_page("catdog compare", subtitle, sections), path)


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
    table = _table(["strategy", "suggested --lr", "lowest loss at", "ended"], rows, [False, True, True, False])
    charts = [
        _figure(f"{c['strategy']}", _lr_chart(c), [("loss per step", 7, "dash"), ("smoothed", 0, "")])
        for c in result["curves"]
    ]
    sections = [
        _section(
            "Suggested learning rates",
            table,
            '<p class="muted">Halfway down the longest fall of the smoothed loss. With discriminative '
            "and freeze-unfreeze the backbone learns at this rate / --lr-ratio.</p>",
        ),
        _section("Loss against learning rate", f'<div class="figs">{"".join(charts)}</div>'),
        _setup(cfg.items(), result.get("versions")),
    ]
    subtitle = f"data <code>{escape(str(cfg.get('data', '?')))}</code> · {escape(str(cfg.get('backbone', '')))}"
    return _write(_page("catdog lr-find", subtitle, sections), path)
