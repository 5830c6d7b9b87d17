"""The HTML report of `catdog check`: duplicate pairs side by side, suspected mislabels and problem images as
thumbnails with their labels, the balance table. Self-contained like the run reports (html.py's page, tables,
cards and thumbnails)."""

from __future__ import annotations

from html import escape
from pathlib import Path

from catdog_cli.core.findings import CheckResult, DuplicatePair, FileRef
from catdog_cli.core.formatting import fmt
from catdog_cli.reporting.html import card, html_table, img_tag, page, section, thumbnail_uri, write_page

SHOWN = 60  # pictures per section; the JSON has every finding


def _thumb(root: Path, path: str) -> str:
    return img_tag(thumbnail_uri(root / path), path, Path(path).name)


def _where(ref: FileRef) -> str:
    label = f" · {escape(ref['label'])}" if ref["label"] is not None else ""
    return f"<div><code>{escape(ref['path'])}</code></div><div class=muted>{escape(ref['split'])}{label}</div>"


def _more(total: int) -> str:
    return f'<p class="muted">{total - SHOWN} more in --json.</p>' if total > SHOWN else ""


def _pair(root: Path, d: DuplicatePair) -> str:
    what = "leak across splits" if d["leak"] else "duplicate within a split"
    measure = "same bytes" if d["kind"] == "exact" else f"cosine {fmt(d['similarity'])} · hash distance {d['distance']}"
    conflict = '<div class="wrong">different labels</div>' if d["conflict"] else ""
    return (
        f'<figure class="thumb"><div class="pair">{_thumb(root, d["a"]["path"])}{_thumb(root, d["b"]["path"])}</div>'
        f'<div class="{"wrong" if d["leak"] else ""}">{d["kind"]} {what}</div><div class=muted>{measure}</div>'
        f"{conflict}{_where(d['a'])}{_where(d['b'])}</figure>"
    )


def _duplicates(result: CheckResult, root: Path) -> str:
    pairs = result["duplicates"]
    if not pairs:
        return section("Duplicates and leaks", '<p class="muted">No duplicate or near-duplicate pairs.</p>')
    leaks = sum(d["leak"] for d in pairs)
    return section(
        "Duplicates and leaks",
        f'<p class="muted">{len(pairs)} pair(s), {leaks} across splits (leaks first: a val or test image that is '
        "also a training image makes its accuracy a lie).</p>",
        f'<div class="thumbs heat">{"".join(_pair(root, d) for d in pairs[:SHOWN])}</div>',
        _more(len(pairs)),
    )


def _labels(result: CheckResult, root: Path) -> str:
    check, suspects = result["label_check"], result["labels"]
    if not check["ran"]:
        return section("Likely label errors", f'<p class="muted">Not checked: {escape(check.get("why_not", ""))}.</p>')
    likely = [s for s in suspects if s["confident"]]
    cards = "".join(
        f'<figure class="thumb">{_thumb(root, s["path"])}<div>given <b>{escape(s["given"])}</b></div>'
        f'<div class="wrong">looks like {escape(s["suspected"])} ({fmt(s["probability"], "pct")})</div>'
        f"<div class=muted><code>{escape(s['path'])}</code></div></figure>"
        for s in likely[:SHOWN]
    )
    return section(
        "Likely label errors",
        f'<p class="muted">{len(likely)} likely error(s) by confident learning, likeliest first '
        f"({len(suspects) - len(likely)} more that the probe only out-votes are in --json): a linear probe on "
        f"{escape(check['backbone'])} features, {check['folds']}-fold, out-of-fold accuracy "
        f"{fmt(check.get('oof_accuracy'), 'pct')}. "
        "Look at each: the probe can be wrong.</p>",
        f'<div class="thumbs">{cards}</div>',
        _more(len(likely)),
    )


def _problems(result: CheckResult, root: Path) -> str:
    problems = result["problems"]
    if not problems:
        return section("Images that should not be there", '<p class="muted">None found.</p>')
    cards = "".join(
        f'<figure class="thumb">{_thumb(root, p["path"])}<div class="{"wrong" if p["level"] == "error" else ""}">'
        f"{escape(p['kind'])}: {escape(p['detail'])}</div><div class=muted><code>{escape(p['path'])}</code></div>"
        "</figure>"
        for p in problems[:SHOWN]
    )
    return section("Images that should not be there", f'<div class="thumbs">{cards}</div>', _more(len(problems)))


def _balance(result: CheckResult) -> str:
    classes = result["classes"]
    rows = [
        [escape(split), *(fmt(c[name], "int") for name in classes), fmt(result["imbalance"][split], "num") + "x"]
        for split, c in result["counts"].items()
    ]
    table = html_table(["split", *classes, "largest / smallest"], rows, [False, *[True] * len(classes), True])
    missing = "".join(
        f'<p class="err">{escape(split)} has no image of {escape(", ".join(m))}</p>'
        for split, m in result["missing"].items()
    )
    facts = ", ".join(f"{escape(k)}: {fmt(v, 'int')}" for k, v in result["facts"].items())
    return section("Balance", table, missing, f'<p class="muted">{facts}</p>')


def write_check_report(result: CheckResult, path: Path) -> Path:
    root = Path(result["data"])
    f = result["findings"]
    cards = (
        '<div class="cards">'
        + card("images", fmt(result["images"], "int"), f"{len(result['classes'])} classes")
        + card("errors", fmt(f["error"], "int"), "leaks, unreadable files")
        + card("warnings", fmt(f["warning"], "int"), "duplicates, likely label errors, placeholders")
        + "</div>"
    )
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in result["notes"])
    sections = [
        cards + notes,
        _duplicates(result, root),
        _labels(result, root),
        _problems(result, root),
        _balance(result),
    ]
    return write_page(page("catdog check", f"data <code>{escape(str(root))}</code>", sections), path)
