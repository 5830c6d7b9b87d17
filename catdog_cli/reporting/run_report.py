"""The report of a train or evaluate run: curves, evaluation, calibration, top losses with heat maps."""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Any

from catdog_cli.core.formatting import fmt, undefined_note
from catdog_cli.core.records import (
    EvaluateResult,
    TrainResult,
)
from catdog_cli.data.balance import imbalance_note
from catdog_cli.reporting.html import (
    card,
    figure_html,
    heatmap_uri,
    html_table,
    img_tag,
    key_values,
    page,
    section,
    thumbnail_uri,
    write_page,
)
from catdog_cli.reporting.svg import Axis, Point, Series, heatmap, plot

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


# ---------------------------------------------------------------- train / evaluate


def history_curve(history: list[dict], key: str, name: str, color: int, kind: str, dashed: bool = False) -> Series:
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
            curve = history_curve(history, f"{split}_{key}", f"{split} {key}", color, kind, dashed=split == "train")
            series.append(curve)
            if curve.points:
                legend.append((f"{split} split", color, "dash" if curve.dashed else ""))
        svg = plot(figure, series, Axis("epoch", integer=True), Axis(figure, percent=kind == "pct"), rule=rule)
        charts.append(figure_html(caption, svg, legend))
    present = [c for c in EPOCH_COLUMNS if any(c[0] in h for h in history)]
    table = html_table(
        [heading for _, heading, _ in present],
        ([fmt(h.get(key), kind) for key, _, kind in present] for h in history),
        [True] * len(present),
    )
    return section(
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
        parts.append(figure_html(f"Confusion matrix ({split} split)", svg, wide=len(classes) > 16))
    if per_class:
        table = html_table(
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
        note = undefined_note(per_class)  # why a rate is "—"
        table += f'<p class="muted">{escape(note)}</p>' if note else ""
        parts.append(figure_html(f"Per class ({split} split)", table))
    return section("Where it goes wrong", f'<div class="figs">{"".join(parts)}</div>')


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
    return figure_html(f"Reliability ({cal.get('split', '?')} split)", svg, legend)


def _calibration(run: dict) -> str:
    """How far confidence can be trusted: ECE before and after the temperature, the reliability diagram, and
    accuracy against coverage at a few confidence thresholds (what --min-confidence trades)."""
    cal = run["calibration"]
    split = cal.get("split", "?")
    cards = [
        card(
            "expected calibration error",
            f"{fmt(cal['ece_before'], 'pct')} → {fmt(cal['ece_after'], 'pct')}",
            f"{split} split, {fmt(cal.get('bins'), 'int')} bins, without → with the temperature",
        ),
        card(
            "temperature",
            fmt(cal["temperature"]),
            cal.get("not_fitted")
            or f"fitted on {cal.get('fitted_on')}"
            f" split · NLL {fmt(cal.get('nll_before'))} → {fmt(cal.get('nll_after'))}",
        ),
    ]
    coverage = html_table(
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
    return section(
        "Confidence",
        f'<div class="cards">{"".join(cards)}</div>',
        f'<p class="muted">{escape(note)}</p>' if note else "",
        '<div class="figs">',
        _reliability(cal),
        figure_html(f"Accuracy on the images it is sure about ({split} split)", coverage),
        "</div>",
    )


def _top_losses(run: dict) -> str:
    """The most confidently wrong images, small and embedded, each beside the heat map of where the model looked
    for its wrong answer; an unreadable file becomes a labeled placeholder."""
    split = (run.get("evaluation") or {}).get("split", "val")
    cards = []
    for t in run["top_losses"]:
        path, name = str(t["path"]), Path(t["path"]).name
        pictures = img_tag(thumbnail_uri(path), path, name)
        if t.get("heatmap"):
            pictures += img_tag(heatmap_uri(path, t["heatmap"]), path, f"where the model looked in {name}")
        cards.append(
            f'<figure class="thumb" title="{escape(path)}"><div class="pair">{pictures}</div>'
            f"<div>true <b>{escape(str(t['true']))}</b></div>"
            f'<div class="wrong">predicted {escape(str(t["pred"]))}</div>'
            f'<div class="muted">confidence {fmt(t.get("confidence"), "pct")} · loss {fmt(t.get("loss"))}</div>'
            f'<div class="file">{escape(name)}</div>'  # printed, not only in the tooltip: phones and paper have none
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
    return section(
        "Top losses",
        f'<p class="muted">The {len(cards)} most confidently wrong images of the {escape(str(split))} split, '
        f"worst first.{legend}</p>",
        f'<div class="thumbs{" heat" if heat else ""}">{"".join(cards)}</div>',
    )


HISTOGRAM_BINS = 30


def _histogram(scores: list[float], lo: float, hi: float, name: str, color: int) -> Series:
    """A distribution as the share of images per score bin, drawn as a line over the bins' centres."""
    width = (hi - lo) / HISTOGRAM_BINS or 1.0
    counts = [0] * HISTOGRAM_BINS
    for v in scores:
        counts[min(HISTOGRAM_BINS - 1, max(0, int((v - lo) / width)))] += 1
    points = [
        Point(
            lo + (k + 0.5) * width,
            c / len(scores),
            f"{name}: {fmt(c, 'int')} images scored {fmt(lo + k * width)}–{fmt(lo + (k + 1) * width)}",
        )
        for k, c in enumerate(counts)
    ]
    return Series(name, points, color)


def _examples(title: str, rows: list[dict]) -> str:
    cards = [
        f'<figure class="thumb" title="{escape(r["path"])}"><div class="pair">'
        f"{img_tag(thumbnail_uri(r['path']), r['path'], Path(r['path']).name)}</div>"
        f"<div>would be <b>{escape(str(r['label']))}</b></div>"
        f'<div class="muted">score {fmt(r.get("score"))}</div></figure>'
        for r in rows
    ]
    return figure_html(title, f'<div class="thumbs">{"".join(cards)}</div>', wide=True) if cards else ""


def _unknown(found: dict) -> str:
    """The unknown-image detector: its threshold, what it keeps and catches, the score distributions of the known
    images and of --unknown-data against the threshold, and a few images of neither class it caught and missed."""
    cards = [
        card(
            "unknown-image detector",
            escape(str(found.get("method"))),
            f"threshold {fmt(found.get('threshold'))}, set to keep {fmt(found.get('keep'), 'pct')} of val",
        )
    ]
    if "kept" in found:
        note = (
            f"accuracy on them {fmt(found.get('accuracy_kept'), 'pct')}, on all {fmt(found.get('accuracy_all'), 'pct')}"
        )
        cards.append(card(f"{found.get('split', '?')} images kept", fmt(found["kept"], "pct"), note))
    elif "val_kept" in found:
        cards.append(card("val images kept", fmt(found["val_kept"], "pct"), "the images the threshold was set on"))
    if "caught" in found:
        cards.append(
            card(
                "unknown images caught",
                fmt(found["caught"], "pct"),
                f"of {fmt(found.get('unknown_images'), 'int')} in {escape(str(found.get('unknown_data')))} · AUROC "
                f"{fmt(found.get('auroc'))} · FPR at 95 % kept {fmt(found.get('fpr_at_95_kept'), 'pct')}",
            )
        )
    scores = {name: list(v) for name, v in (found.get("scores") or {}).items() if v}
    parts = []
    if scores:
        every = [v for vs in scores.values() for v in vs] + [found.get("threshold", 0.0)]
        lo, hi = min(every), max(every)
        series = [_histogram(v, lo, hi, name, color) for color, (name, v) in enumerate(scores.items())]
        svg = plot(
            "unknown-scores",
            series,
            Axis("unknown score"),
            Axis("share of images", percent=True, include=(0,)),
            rule=(found["threshold"], "threshold") if "threshold" in found else None,
        )
        parts.append(
            figure_html(
                "Unknown scores (right of the threshold: unknown)", svg, [(n, c, "") for c, n in enumerate(scores)]
            )
        )
    parts.append(_examples("Images of neither class it caught (highest scores)", found.get("caught_examples") or []))
    parts.append(_examples("Images of neither class it missed (lowest scores)", found.get("missed_examples") or []))
    return section(
        "Images of neither class",
        f'<div class="cards">{"".join(cards)}</div>',
        f'<div class="figs">{"".join(parts)}</div>',
    )


def setup_section(config: Iterable[tuple[str, Any]], versions: dict | None) -> str:
    """Configuration and versions, so a reader can tell exactly what produced these numbers."""
    return section(
        "Setup",
        '<div class="figs">',
        figure_html("Configuration", key_values(config)),
        figure_html("Versions", key_values((versions or {}).items())),
        "</div>",
    )


def _train_cards(run: dict) -> str:
    cfg, ev, params = run.get("config") or {}, run.get("evaluation"), run.get("params") or {}
    cards = []
    if run.get("best_val_acc") is not None:
        of = f" of {fmt(cfg['epochs'], 'int')}" if cfg.get("epochs") is not None else ""
        cards.append(
            card(
                "best val accuracy",
                fmt(run["best_val_acc"], "pct"),
                f"at epoch {fmt(run.get('best_epoch'), 'int')}{of}",
            )
        )
    if ev:
        cards.append(
            card(
                f"accuracy on {ev.get('split', '?')} split",
                fmt(ev.get("accuracy"), "pct"),
                f"loss {fmt(ev.get('loss'))} · {fmt(ev.get('num_images'), 'int')} images"
                f" · checkpoint {ev.get('checkpoint', '?')}",
            )
        )
    if params:
        cards.append(
            card("trainable parameters", fmt(params.get("trainable"), "int"), f"of {fmt(params.get('total'), 'int')}")
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
        sections.append(section("Evaluation", '<p class="muted">This run holds no evaluation.</p>'))
    if run.get("calibration"):
        sections.append(_calibration(run))
    if run.get("top_losses"):
        sections.append(_top_losses(run))
    found = run.get("unknown") or run.get("ood")  # evaluate's measurements, or train's fitted detector
    if found:
        sections.append(_unknown(found))
    params = run.get("params") or {}
    config = [
        *cfg.items(),
        ("parameters total", params.get("total")),
        ("parameters trainable", params.get("trainable")),
    ]
    sections.append(setup_section(config, run.get("versions")))
    return write_page(page(title, subtitle, sections), path)
