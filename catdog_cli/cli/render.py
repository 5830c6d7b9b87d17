"""Rich tables and lines of what the engine returns: train, evaluate, predict, export, fetch, lr-find (compare's
table is compare_table.py's).

Off a terminal tables take their natural width unless COLUMNS says otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from catdog_cli.cli.progress import safe
from catdog_cli.core.formatting import fmt, lr_text, pct, printable, undefined_note, weights_text
from catdog_cli.core.records import (
    Calibration,
    Coverage,
    EvaluateResult,
    ExportResult,
    LrCurve,
    LrFindResult,
    Prediction,
    Throughput,
    TrainResult,
    shown_steps,
)
from catdog_cli.data.balance import imbalance_note


def train_summary(result: TrainResult) -> Table:
    config = result["config"]
    table = Table(title="training run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    counts = result["params"]
    best = (
        f"{pct(result['best_val_acc'])} (epoch {result['best_epoch']})"
        if result["best_val_acc"] is not None
        else "none: stopped before the first epoch ended"
    )
    rows = [
        ("backbone", printable(f"{config['backbone']} ({weights_text(config['weights'])})")),
        ("strategy", config["strategy"]),
        ("parameters", f"{fmt(counts['total'], 'params')} total, {fmt(counts['trainable'], 'params')} trainable"),
        ("classes", printable(", ".join(result["classes"]))),
        ("val split", printable(result["split_origin"])),
        ("device", f"{result['device']} ({result['precision']})"),
        ("epochs", f"{result['epochs']} ({result['ended']})" if "ended" in result else str(result["epochs"])),
        ("best val accuracy", best + (", EMA weights" if result.get("best_weights") == "ema" else "")),
    ]
    if "evaluation" in result:  # each class's recall: what an imbalanced folder hides behind accuracy
        per_class = result["evaluation"]["per_class"]
        recalls = printable(", ".join(f"{c['class']} {pct(c['recall'])}" for c in per_class))
        note = undefined_note(per_class)  # why one is "—"
        rows.append(("val recall per class", recalls + (f" ({note})" if note else "")))
    counts = result.get("train_counts")
    note = imbalance_note(result["classes"], list(counts.values())) if counts else None
    if note:
        rows.append(("class balance", printable(note) + (": --balance was on" if config.get("balance") else "")))
    if "test" in result:
        rows.append(("test accuracy (best.pt)", pct(result["test"]["accuracy"])))
    if "calibration" in result:
        rows.append(("calibration (val)", calibration_line(result["calibration"])))
    if "ood" in result:
        found = result["ood"]
        rows.append(
            (
                "unknown-image detector",
                f"{found['method']}, threshold {found['threshold']:.4g}: keeps {pct(found['val_kept'])} of val",
            )
        )
    if result["skipped"]:
        rows.append(("skipped files", str(len(result["skipped"]))))
    rows.append(("saved in", printable(result["out"])))
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def evaluation_tables(ev: EvaluateResult) -> list[RenderableType]:
    """A title line (never squeezed into a table's width) above each table."""
    split = ev["split"]
    model = ""
    if "backbone" in ev:
        model = f"{printable(ev['backbone'])} ({fmt(ev['params']['total'], 'params')} parameters) on "
    metrics = Table()
    for col in ("class", "precision", "recall", "F1", "images"):
        metrics.add_column(col, justify="left" if col == "class" else "right")
    for row in ev["per_class"]:
        metrics.add_row(
            Text(printable(row["class"])),
            pct(row["precision"]),
            pct(row["recall"]),
            pct(row["f1"]),
            str(row["support"]),
        )
    classes = [printable(row["class"]) for row in ev["per_class"]]
    confusion = Table()
    confusion.add_column("")
    for name in classes:
        confusion.add_column(Text(name), justify="right")
    for i, (name, row) in enumerate(zip(classes, ev["confusion"])):
        confusion.add_row(Text(name), *(Text(str(n), style="bold green" if i == j else "") for j, n in enumerate(row)))
    return [
        Text(f"{model}{split} split: accuracy {pct(ev['accuracy'])}, loss {ev['loss']:.4f}, {ev['num_images']} images"),
        metrics,
        *([Text(note)] if (note := undefined_note(ev["per_class"])) else []),
        Text(f"confusion on {split} (rows: true, columns: predicted)"),
        confusion,
        *([confidence_table(ev)] if "calibration" in ev else []),
        *([Text(unknown_line(ev["unknown"]))] if "unknown" in ev else []),
    ]


def unknown_line(found: dict) -> str:
    """'unknown images (knn): keeps 95.0% of val, accuracy on them 99.5% (all 99.2%); of 398 in DIR, caught 100.0%
    (AUROC 1.000, FPR at 95% kept 0.0%)'."""
    kept = pct(found["accuracy_kept"]) if found["accuracy_kept"] is not None else "-"
    line = (
        f"unknown images ({found['method']}): keeps {pct(found['kept'])} of {found['split']}, accuracy on them "
        f"{kept} (all {pct(found['accuracy_all'])})"
    )
    if "caught" in found:
        line += (
            f"; of {found['unknown_images']} in {printable(found['unknown_data'])}, caught {pct(found['caught'])} "
            f"(AUROC {found['auroc']:.3f}, FPR at 95% kept {pct(found['fpr_at_95_kept'])})"
        )
    return line


def calibration_line(cal: Calibration) -> str:
    """'T = 1.42: expected calibration error 6.1% -> 1.3%' (or why T stayed 1)."""
    line = (
        f"T = {cal['temperature']:.3g}: expected calibration error {pct(cal['ece_before'])} -> {pct(cal['ece_after'])}"
    )
    return line + (f" (T not fitted: {cal['not_fitted']})" if "not_fitted" in cal else "")


def selective_line(c: Coverage) -> str:
    """'99.6% on the 92.0% of images it is sure about (confidence >= 0.9)'."""
    if c["accuracy"] is None:
        return f"no image reaches confidence {c['threshold']:g}"
    return (
        f"{pct(c['accuracy'])} on the {pct(c['coverage'])} of images it is sure about "
        f"(confidence >= {c['threshold']:g})"
    )


def confidence_table(ev: EvaluateResult) -> Group:
    """Calibration on the evaluated split, and accuracy against coverage at a few confidence thresholds."""
    cal = ev["calibration"]
    note = " (measured on the images T was fitted on: optimistic)" if cal.get("in_sample") else ""
    lines: list[RenderableType] = [Text(f"confidence on {cal['split']}: {calibration_line(cal)}{note}")]
    if "selective" in ev:
        lines.append(
            Text(
                f"with --min-confidence {ev['selective']['threshold']:g}: accuracy {selective_line(ev['selective'])}",
                style="bold",
            )
        )
    table = Table(title="accuracy on the images it is sure about", title_justify="left")
    for col in ("confidence >=", "images", "coverage", "accuracy"):
        table.add_column(col, justify="right")
    for c in cal["coverage"]:
        table.add_row(f"{c['threshold']:g}", str(c["images"]), pct(c["coverage"]), pct(c["accuracy"]))
    return Group(table, *lines)


def throughput_line(result: Throughput) -> str:
    """How fast evaluate or predict went, and on what: the figure a user compares machines by (none when no
    file could be classified: a rate of nothing is no figure)."""
    where = f"{result['runtime']} on {result['device']}, {result['precision']}"
    predictions = result.get("predictions")
    if not result["images_per_sec"] or (predictions is not None and not any("label" in r for r in predictions)):
        return f"no image was classified ({result['seconds']:.1f} s, {where})"
    return f"{result['images_per_sec']:.1f} img/s ({result['seconds']:.1f} s decoding and computing, {where})"


def predictions_table(rows: list[Prediction]) -> Table:
    """One row per image; unknown ones (of neither class) marked in magenta, unsure ones (--min-confidence) in
    yellow; the runners-up with --top-k."""
    counts = [(sum(bool(r.get(k)) for r in rows), k) for k in ("unknown", "unsure")]
    title = f"{len(rows)} image(s)" + "".join(f", {n} {k}" for n, k in counts if n)
    table = Table(title=title, title_justify="left")
    table.add_column("image", overflow="fold")
    table.add_column("predicted")
    table.add_column("confidence", justify="right")
    top = any("top" in r for r in rows)
    if top:
        table.add_column("next most likely")
    for row in rows:
        if "error" in row:
            table.add_row(Text(printable(row["path"])), Text("unreadable", style="red"), Text(printable(row["error"])))
            continue
        label = Text(printable(row["label"]))
        if row.get("unknown"):
            label.append(" (unknown)", style="magenta")
        if row.get("unsure"):
            label.append(" (unsure)", style="yellow")
        cells: list[RenderableType] = [Text(printable(row["path"])), label, pct(row["confidence"])]
        if top:
            runners_up = row.get("top", [])[1:]
            cells.append(Text(", ".join(f"{printable(t['label'])} {pct(t['confidence'])}" for t in runners_up)))
        table.add_row(*cells)
    return table


def export_summary(result: ExportResult) -> Table:
    meta, parity = result["metadata"], result["parity"]
    table = Table(
        title=Text(f"exported {printable(result['checkpoint'])} ({result['format']})"),
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    shape = "x".join(str(d) for d in meta["input"]["shape"])
    rows = [
        ("file", f"{result['out']} ({fmt(result['bytes'] / 1e6)} MB)"),
        (
            "input",
            f"{meta['input']['name']}: {meta['input']['dtype']} {meta['input']['channels']} "
            f"{meta['input']['layout']} ({shape})",
        ),
        ("before the input", meta["preprocessing"]["steps"]),  # a list: one numbered line each
        ("inside", meta["preprocessing"]["in_graph"] + f", T = {meta['temperature']:.3g}"),
        ("output", f"{meta['output']['name']} ({', '.join(meta['classes'])})"),
        (
            "parity",
            f"{parity['images']} images of {parity['source']}: largest probability difference "
            f"{parity['max_abs_diff']:.1e} (tolerance {parity['tolerance']:.0e}), labels agree on "
            f"{pct(parity['label_agreement'])}",
        ),
    ]
    if "int8" in result:
        q = result["int8"]
        rows.append(
            (
                "int8",
                f"{q['images']} val images: accuracy {pct(q['accuracy_fp32'])} at fp32, {pct(q['accuracy_int8'])} "
                f"at int8 ({q['points_lost']:.2f} points lost, tolerance {q['tolerance_points']}), labels agree on "
                f"{pct(q['label_agreement'])}; calibrated on {q['calibration_images']} training images",
            )
        )
    for name, cell in rows:
        steps = cell if isinstance(cell, list) else None
        text = "\n".join(f"{n}. {printable(s)}" for n, s in enumerate(steps, 1)) if steps else printable(cell)
        table.add_row(Text(name), Text(text))
    return table


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
        table.add_row(
            safe(d.name),
            safe(", ".join(d.classes)),
            *(str(d.splits.get(s, "-")) for s in splits),
            str(len(d.skipped)),
            safe(d.path),
        )
    return table


def lr_plot(curve: LrCurve, width: int = 60, height: int = 12) -> str:
    """The smoothed loss against the head's lr (log scale) in text, the suggested lr marked with a column of |."""
    kept = shown_steps(curve)
    xs = [math.log10(curve["lrs"][i]) for i in kept]
    ys = [curve["smoothed"][i] for i in kept]
    if len(xs) < 2:
        return "(too few steps to plot)"
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * width for _ in range(height)]

    def column(x: float) -> int:
        return round((x - x0) / ((x1 - x0) or 1) * (width - 1))

    if curve["suggested_lr"]:
        col = column(math.log10(curve["suggested_lr"]))
        for row in grid:
            row[min(width - 1, max(0, col))] = "|"
    for x, y in zip(xs, ys):
        grid[round((y1 - y) / ((y1 - y0) or 1) * (height - 1))][column(x)] = "•"
    label = max(len(f"{y1:.3g}"), len(f"{y0:.3g}"))
    lines = [
        f"{(f'{y1:.3g}' if r == 0 else f'{y0:.3g}' if r == height - 1 else ''):>{label}} ┤{''.join(row)}"
        for r, row in enumerate(grid)
    ]
    ticks = f"{10**x0:.0e}".ljust(width // 2) + f"{10**x1:.0e}".rjust(width - width // 2)
    lines.append(" " * label + " └" + "─" * width)
    lines.append(" " * (label + 2) + ticks)
    return "\n".join(lines)


def _lr(lr: float | None) -> str:
    """A suggested rate as one would type it: two significant digits (3.6e-4, not 0.0003594)."""
    return fmt(None) if lr is None else lr_text(float(f"{lr:.2g}"))


def lr_find_table(result: LrFindResult) -> Table:
    table = Table(
        title=safe(f"lr-find on {result['config']['data']} ({result['config']['backbone']})"), title_justify="left"
    )
    for col in ("strategy", "suggested --lr", "lowest loss at", "ended"):
        table.add_column(col, justify="left" if col in ("strategy", "ended") else "right")
    for curve in result["curves"]:
        table.add_row(curve["strategy"], _lr(curve["suggested_lr"]), _lr(curve["min_loss_lr"]), curve["ended"])
    return table
