"""Small SVG chart primitives for catdog's HTML reports.

Hand-written so a report opens offline in any browser without a plotting stack: plain inline SVG, colored
by the page's CSS (palette classes c0..c7, see report.CSS), with a <title> tooltip on every mark. Titles and
legends live in the surrounding HTML, where text wraps on a phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

CHAR_W = 7.0  # rough width of one 12px sans-serif character: enough to lay out labels without a font engine
PALETTE = 8  # number of color classes c0..c7 the page's CSS defines


@dataclass
class Point:
    """One mark: position, tooltip, optional text drawn beside it, and whether it is the best one."""

    x: float
    y: float
    tip: str
    label: str = ""
    best: bool = False


@dataclass
class Series:
    """Points of one color; joined by a line for curves, left apart for scatters."""

    name: str
    points: list[Point]
    color: int
    dashed: bool = False
    line: bool = True


@dataclass
class Axis:
    """How one axis maps and labels values; `include` are values it must cover besides the data (0, a shared range)."""

    label: str
    log: bool = False
    percent: bool = False
    integer: bool = False
    include: tuple[float, ...] = ()
    limit: tuple[float, float] | None = None  # values the axis never reaches past (a rate: 0 and 1), padding included


def _n(v: float) -> str:
    """Coordinates with one decimal keep the file small and the drawing exact enough."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, content: str, cls: str = "tick", anchor: str = "middle", attrs: str = "") -> str:
    return f'<text class="{cls}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{attrs}>{escape(content)}</text>'


def _open(figure: str, width: float, height: float, label: str) -> str:
    """The <svg> tag: tests and readers find each chart by its data-figure."""
    return (
        f'<svg class="chart" data-figure="{escape(figure)}" width="{_n(width)}" height="{_n(height)}" '
        f'viewBox="0 0 {_n(width)} {_n(height)}" role="img" aria-label="{escape(label)}">'
    )


def _axis_titles(x_label: str, x_mid: float, bottom: float, y_label: str, y_mid: float) -> str:
    """Axis titles: x centered along the bottom edge, y turned up along the left edge."""
    turn = f' transform="rotate(-90 13 {_n(y_mid)})"'
    return _text(x_mid, bottom - 6, x_label, "axis-label") + _text(13, y_mid, y_label, "axis-label", attrs=turn)


def _si(v: float) -> str:
    """Parameter counts read better as 10k, 1M than as 10000, 1000000."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:g}{suffix}"
    return f"{v:g}"


def _linear_ticks(lo: float, hi: float, integer: bool) -> tuple[list[float], float]:
    """About five round ticks covering [lo, hi], and their step."""
    if hi <= lo:
        pad = 1.0 if integer or lo == 0 else abs(lo) * 0.1
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / 5
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1.0, round(step))
    start, end = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(start, end + 1)], step


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten covering [lo, hi]; at least one decade so a single value still gets an axis."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if a == b:
        a, b = a - 1, b + 1
    return [10.0**e for e in range(a, b + 1)]


class _Scale:
    """Maps data values onto pixels along one axis, and labels its ticks."""

    def __init__(self, axis: Axis, values: Sequence[float], start: float, stop: float) -> None:
        self.axis = axis
        values = [*values, *axis.include] or [0.0, 1.0]
        lo, hi = min(values), max(values)
        # A little room around the data so no mark sits on an axis; epochs are exact, they need none.
        if axis.log:
            self.ticks = _log_ticks(lo / 1.5, hi * 1.5)
            self.decimals = 0
        else:
            pad = 0 if axis.integer else (hi - lo) * 0.05
            lo, hi = lo - pad if lo < 0 else max(0.0, lo - pad), hi + pad
            if axis.limit:
                lo, hi = max(lo, axis.limit[0]), min(hi, axis.limit[1])
            self.ticks, step = _linear_ticks(lo, hi, axis.integer)
            self.decimals = max(0, -math.floor(math.log10(step * (100 if axis.percent else 1)) + 1e-9))
        self.start, self.stop = start, stop

    def _t(self, v: float) -> float:
        return math.log10(v) if self.axis.log else v

    def __call__(self, v: float) -> float:
        lo, hi = self._t(self.ticks[0]), self._t(self.ticks[-1])
        return self.start + (self._t(v) - lo) / (hi - lo) * (self.stop - self.start)

    def label(self, v: float) -> str:
        if self.axis.log:
            return _si(v)
        if self.axis.percent:
            return f"{v * 100:.{self.decimals}f}%"
        return f"{v:.{self.decimals}f}"


def _runs(points: Sequence[Point], x: Axis, y: Axis) -> list[list[Point]]:
    """Points in unbroken runs of drawable ones.

    NaN losses (a diverged run) and non-positive values on a log axis cannot be placed: they are left out,
    and a line must not bridge them as if the value were known.
    """
    runs: list[list[Point]] = [[]]
    for p in points:
        if all(v is not None and math.isfinite(v) and (v > 0 or not ax.log) for v, ax in ((p.x, x), (p.y, y))):
            runs[-1].append(p)
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def plot(
    figure: str,
    series: Sequence[Series],
    x: Axis,
    y: Axis,
    *,
    width: int = 480,
    height: int = 280,
    rule: tuple[float, str] | None = None,
) -> str:
    """One chart for every curve and scatter in the reports; `rule` draws a labeled vertical marker."""
    runs = [(s, _runs(s.points, x, y)) for s in series]
    points = [p for _, rs in runs for r in rs for p in r]
    top, bottom = 14, 42
    ys = _Scale(y, [p.y for p in points], height - bottom, top)
    xs = _Scale(x, [p.x for p in points] + ([rule[0]] if rule else []), 0, 0)
    left = 26 + CHAR_W * max(len(ys.label(t)) for t in ys.ticks)
    right = max(14, CHAR_W * len(xs.label(xs.ticks[-1])) / 2 + 4)  # room for the last tick label
    xs.start, xs.stop = left, width - right

    out = [_open(figure, width, height, f"{y.label} against {x.label}")]
    for t in ys.ticks:
        out.append(f'<path class="gridline" d="M{_n(left)} {_n(ys(t))}H{_n(width - right)}"/>')
        out.append(_text(left - 5, ys(t) + 4, ys.label(t), anchor="end"))
    for t in xs.ticks:
        out.append(f'<path class="gridline" d="M{_n(xs(t))} {top}V{height - bottom}"/>')
        out.append(_text(xs(t), height - bottom + 16, xs.label(t)))
    out.append(f'<path class="axisline" d="M{_n(left)} {top}V{height - bottom}H{_n(width - right)}"/>')
    out.append(_axis_titles(x.label, (left + width - right) / 2, height, y.label, (top + height - bottom) / 2))
    right_half = (left + width) / 2  # text there is anchored at its end so it stays inside the chart
    if rule:
        rx = xs(rule[0])
        out.append(f'<path class="rule" d="M{_n(rx)} {top}V{height - bottom}"/>')
        flip = rx > right_half
        out.append(_text(rx - 4 if flip else rx + 4, top + 10, rule[1], "rule-label", "end" if flip else "start"))
    labels = _Labels()
    for s, rs in runs:
        cls = f"c{s.color % PALETTE}"
        d = "".join("M" + "L".join(f"{_n(xs(p.x))} {_n(ys(p.y))}" for p in r) for r in rs if len(r) > 1)
        if s.line and d:
            out.append(f'<path class="line {cls}{" dash" if s.dashed else ""}" d="{d}"/>')
        for p in (p for r in rs for p in r):
            px, py = xs(p.x), ys(p.y)
            best = " best" if p.best else ""
            out.append(
                f'<circle class="pt {cls}{best}" cx="{_n(px)}" cy="{_n(py)}" r="{5 if p.best else 3.5}">'
                f"<title>{escape(p.tip)}</title></circle>"
            )
            end = px > right_half
            if p.label and (ly := labels.place(p.label, px, py - 8, end)) is not None:
                out.append(_text(px, ly, p.label, "pt-label", "end" if end else "start"))
    out.append("</svg>")
    return "".join(out)


class _Labels:
    """Point labels that never print over each other: a label that would overlap one already placed moves up a
    line (up to twice), and is left out when the same words already stand there (two cells of one backbone at one
    spot: its name once, not "resnet18resnet18"); the point's tooltip still names it."""

    LINE = 12.0

    def __init__(self) -> None:
        self.placed: list[tuple[str, float, float, float, float]] = []

    def place(self, text: str, x: float, y: float, end: bool) -> float | None:
        width = CHAR_W * len(text)
        x0, x1 = (x - width, x) if end else (x, x + width)
        for lift in range(3):
            top = y - lift * self.LINE
            clash = [
                t for t, a0, a1, b0, b1 in self.placed if a0 < x1 and x0 < a1 and b0 < top and top - self.LINE < b1
            ]
            if not clash:
                self.placed.append((text, x0, x1, top - self.LINE, top))
                return top
            if text in clash:
                return None
        return None


def heatmap(figure: str, matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Confusion matrix: rows are true classes, columns predictions; shade is the share of the row.

    Correct cells (the diagonal) and mistakes get different hues so errors stand out at a glance. Cells shrink
    with many classes (down to 14 px); labels shrink with them and column labels turn 45 or 90 degrees to fit.
    """
    n = len(labels)
    names = [name if len(name) <= 16 else name[:15] + "…" for name in labels]
    cell = max(14.0, min(56.0, 380 / max(n, 1)))
    label_font = min(12.0, cell * 0.85)
    widest = CHAR_W * label_font / 12 * max((len(name) for name in names), default=1)
    angle = 0 if widest <= cell else 45 if cell >= 24 else 90
    left = 26 + widest + 6
    grid_bottom = 6 + n * cell
    height = grid_bottom + {0: 22, 45: widest * 0.72 + 20, 90: widest + 16}[angle] + 20
    width = left + n * cell + 10
    digits = max((len(str(v)) for row in matrix for v in row), default=1)
    font = min(12.0, cell * 0.85 / (0.62 * digits + 0.2))
    count_size, label_size = (f' style="font-size:{_n(f)}px"' for f in (font, label_font))

    out = [_open(figure, width, height, "confusion matrix")]
    for i, row in enumerate(matrix):
        total = sum(row)
        cy = 6 + i * cell
        out.append(_text(left - 6, cy + cell / 2 + label_font * 0.35, names[i], anchor="end", attrs=label_size))
        for j, count in enumerate(row):
            share = count / total if total else 0.0
            cx = left + j * cell
            out.append(
                f'<rect class="cell {"diag" if i == j else "off"}" x="{_n(cx)}" y="{_n(cy)}" width="{_n(cell)}" '
                f'height="{_n(cell)}" fill-opacity="{0.06 + 0.94 * share:.2f}"><title>true {escape(labels[i])}, '
                f"predicted {escape(labels[j])}: {count} of {total}</title></rect>"
            )
            if font >= 6:
                cls = "count inv" if share > 0.5 else "count"
                out.append(_text(cx + cell / 2, cy + cell / 2 + font * 0.35, str(count), cls, attrs=count_size))
    for j, name in enumerate(names):
        cx = left + j * cell + cell / 2
        if angle:
            ax, ay = cx + (label_font * 0.35 if angle == 90 else 0), grid_bottom + 10
            turn = f' transform="rotate(-{angle} {_n(ax)} {_n(ay)})"'
            out.append(_text(ax, ay, name, anchor="end", attrs=label_size + turn))
        else:
            out.append(_text(cx, grid_bottom + 16, name, attrs=label_size))
    out.append(_axis_titles("predicted", left + n * cell / 2, height, "true", 6 + n * cell / 2))
    out.append("</svg>")
    return "".join(out)
