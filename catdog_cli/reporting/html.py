"""Self-contained HTML reports: the page, its parts (tables, cards, figures) and thumbnails, for the report modules.

Pure functions over the run's JSON dicts (run.json, compare.json): one file that opens offline in any
browser, on a phone too. Charts are inline SVG (reporting/svg.py), thumbnails are base64 JPEGs of a few KB,
there is no script, no stylesheet link, no external URL. Every number goes through `fmt`, so what the page
shows is exactly what the JSON holds, formatted one way.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterable, Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from catdog_cli.core.files import atomic_write_text
from catdog_cli.core.formatting import fmt
from catdog_cli.core.records import (
    Heatmap,
)
from catdog_cli.reporting import overlays

THUMB_PX = 96

# the pages' one stylesheet, inlined into each (package data: a report has no external link)
CSS = resources.files("catdog_cli.reporting").joinpath("report.css").read_text(encoding="utf-8")


def _value(value: Any) -> str:
    """A config or version value as text: ints and floats through fmt, the rest as they are."""
    if isinstance(value, (bool, str)):
        return str(value)
    if value is None or isinstance(value, (int, float)):
        return fmt(value, "int" if isinstance(value, int) else "num")
    return json.dumps(value)


def html_table(
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


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """Two-column table for config and versions; a long value (a weights path) wraps instead of being cut."""
    return (
        f'<div class="kv">{html_table(None, ([escape(k), escape(_value(v))] for k, v in pairs), [False, False])}</div>'
    )


def card(title: str, value: str, note: str = "") -> str:
    return f'<div class="card"><span class="muted">{escape(title)}</span><b>{escape(value)}</b>{escape(note)}</div>'


def figure_html(caption: str, body: str, legend: Sequence[tuple[str, int, str]] = (), wide: bool = False) -> str:
    """A chart or table with its caption; legend items are (name, color, swatch style), in HTML so they wrap."""
    items = "".join(
        f'<li><span class="sw c{color} {style}"></span>{escape(name)}</li>' for name, color, style in legend
    )
    return (
        f"<figure{' class=wide' if wide else ''}><figcaption>{escape(caption)}</figcaption>{body}"
        + (f'<ul class="legend">{items}</ul>' if items else "")
        + "</figure>"
    )


def page(title: str, subtitle: str, sections: Iterable[str]) -> str:
    body = "".join(sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{escape(title)}</h1><p class="muted">{subtitle}</p>{body}</main></body></html>\n'
    )


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}</section>"


def write_page(html: str, path: Path) -> Path:
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


def img_tag(uri: str | None, path: str, alt: str) -> str:
    """A thumbnail's <img>, or a labeled placeholder where the file could not be read."""
    if uri is None:
        return f'<div class="missing">cannot read {escape(path)}</div>'
    return f'<img src="{uri}" alt="{escape(alt)}" width="{THUMB_PX}" height="{THUMB_PX}">'


def heatmap_uri(path: str | Path, heatmap: Heatmap) -> str | None:
    """The crop the model saw, colored by where it looked (overlays.py), as a few-KB JPEG data: URI."""
    image = _open_upright(path)
    if image is None:
        return None
    return _jpeg_uri(overlays.overlay(overlays.model_view(image, heatmap["crop"]), heatmap["grid"], THUMB_PX))
