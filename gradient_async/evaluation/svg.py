"""Inline SVG charts for the report: bars with interval whiskers, and line charts. No dependencies.

Every chart is a self-contained `<svg>` string with a `viewBox`, so it scales with the page. Colours come
from `PALETTE` (one per series, in order), so tests can find each series' pixels in a screenshot.

Example::

    svg = bar_chart([("exact", [("base", 0.2, (0.1, 0.3)), ("tuned", 0.8, (0.7, 0.9))])])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Final

__all__ = ["PALETTE", "bar_chart", "line_chart"]

PALETTE: Final = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_AXIS: Final = "#444444"
_GRID: Final = "#e5e5e5"

Bar = tuple[str, "float | None", "tuple[float, float] | None"]
"""(series name, value in [0, 1] or None, interval or None)."""


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _text(x: float, y: float, body: str, *, anchor: str = "middle", size: int = 12, extra: str = "") -> str:
    return f'<text x="{_fmt(x)}" y="{_fmt(y)}" text-anchor="{anchor}" font-size="{size}" {extra}>{escape(body)}</text>'


def _legend(names: Sequence[str], x: float, y: float) -> list[str]:
    parts = []
    for i, name in enumerate(names):
        yy = y + i * 18
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{_fmt(x)}" y="{_fmt(yy - 10)}" width="12" height="12" fill="{color}"/>')
        parts.append(_text(x + 18, yy, _short(name, 40), anchor="start"))
    return parts


def _open(kind: str, width: float, height: float, title: str, title_x: float) -> list[str]:
    """The opening of a chart: the svg element, a white background and the title."""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" viewBox="0 0 {_fmt(width)} {_fmt(height)}" '
        f'width="{_fmt(width)}" height="{_fmt(height)}" role="img" aria-label="{escape(title)}">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
    ]
    if title:
        parts.append(_text(title_x, 16, title, anchor="start", size=13, extra='font-weight="bold"'))
    return parts


def _legend_width(names: Sequence[str]) -> float:
    return 30.0 + 7.5 * max((min(len(n), 40) for n in names), default=0)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bar_chart(groups: Sequence[tuple[str, Sequence[Bar]]], *, title: str = "") -> str:
    """Grouped bars on a 0–1 scale: one group per scorer, one bar per model, a whisker for each interval."""
    series = [name for name, _, _ in groups[0][1]] if groups else []
    bar_w, gap, pad_l, pad_t, plot_h = 28.0, 24.0, 48.0, 28.0, 220.0
    group_w = max(1, len(series)) * bar_w + gap
    plot_w = max(240.0, len(groups) * group_w + gap)
    legend_x = pad_l + plot_w + 16
    width = legend_x + _legend_width(series)
    height = pad_t + plot_h + 56 + max(0, len(series) * 18 - 40)
    base_y = pad_t + plot_h
    parts = _open("bar-chart", width, height, title, pad_l)
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = base_y - tick * plot_h
        parts.append(
            f'<line x1="{_fmt(pad_l)}" y1="{_fmt(y)}" x2="{_fmt(pad_l + plot_w)}" y2="{_fmt(y)}" '
            f'stroke="{_GRID if tick else _AXIS}"/>'
        )
        parts.append(_text(pad_l - 6, y + 4, f"{tick:.2f}", anchor="end", size=11))
    for g, (label, bars) in enumerate(groups):
        x0 = pad_l + gap + g * group_w
        for i, (name, value, ci) in enumerate(bars):
            x = x0 + i * bar_w
            color = PALETTE[i % len(PALETTE)]
            if value is None or not math.isfinite(value):
                parts.append(_text(x + bar_w / 2, base_y - 4, "n/a", size=10))
                continue
            h = max(0.0, min(1.0, value)) * plot_h
            parts.append(
                f'<rect class="bar" data-model="{escape(name)}" data-scorer="{escape(label)}" data-value="{value:.4f}" '
                f'x="{_fmt(x + 3)}" y="{_fmt(base_y - h)}" width="{_fmt(bar_w - 6)}" height="{_fmt(h)}" '
                f'fill="{color}"><title>{escape(name)} {escape(label)}: {value:.3f}</title></rect>'
            )
            if ci is not None:
                lo_y, hi_y = base_y - ci[0] * plot_h, base_y - ci[1] * plot_h
                cx = x + bar_w / 2
                parts.append(
                    f'<path class="whisker" d="M{_fmt(cx)} {_fmt(lo_y)}V{_fmt(hi_y)}M{_fmt(cx - 5)} {_fmt(lo_y)}'
                    f'h10M{_fmt(cx - 5)} {_fmt(hi_y)}h10" stroke="{_AXIS}" stroke-width="2" fill="none" '
                    'shape-rendering="crispEdges"/>'
                )
        parts.append(_text(x0 + len(bars) * bar_w / 2, base_y + 18, _short(label, 24), size=11))
    parts.extend(_legend(series, legend_x, pad_t + 10))
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str = "",
    x_label: str = "",
    y_range: tuple[float, float] | None = None,
    markers: bool = False,
) -> str:
    """Lines through (x, y) points, one per series; the y range is the data's unless given."""
    pad_l, pad_t, plot_w, plot_h = 56.0, 28.0, 520.0, 220.0
    points = [p for _, pts in series for p in pts]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] or [0.0, 1.0]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = y_range if y_range is not None else (min(ys), max(ys))
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    legend_x = pad_l + plot_w + 16
    width, height = legend_x + _legend_width([name for name, _ in series]), pad_t + plot_h + 48

    def sx(x: float) -> float:
        return pad_l + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return pad_t + plot_h - (y - y_lo) / (y_hi - y_lo) * plot_h

    parts = _open("line-chart", width, height, title, pad_l)
    for k in range(5):
        value = y_lo + (y_hi - y_lo) * k / 4
        y = sy(value)
        parts.append(
            f'<line x1="{_fmt(pad_l)}" y1="{_fmt(y)}" x2="{_fmt(pad_l + plot_w)}" y2="{_fmt(y)}" '
            f'stroke="{_GRID if k else _AXIS}"/>'
        )
        parts.append(_text(pad_l - 6, y + 4, f"{value:.3g}", anchor="end", size=11))
    parts.append(_text(pad_l, pad_t + plot_h + 18, f"{x_lo:g}", anchor="start", size=11))
    parts.append(_text(pad_l + plot_w, pad_t + plot_h + 18, f"{x_hi:g}", anchor="end", size=11))
    if x_label:
        parts.append(_text(pad_l + plot_w / 2, pad_t + plot_h + 36, x_label, size=11))
    for i, (name, pts) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{_fmt(sx(x))},{_fmt(sy(y))}" for x, y in pts if math.isfinite(y))
        if coords:
            parts.append(
                f'<polyline class="series" data-series="{escape(name)}" points="{coords}" fill="none" '
                f'stroke="{color}" stroke-width="2.5" stroke-linejoin="round"/>'
            )
        if markers or len(pts) == 1:
            for x, y in pts:
                if math.isfinite(y):
                    parts.append(f'<circle cx="{_fmt(sx(x))}" cy="{_fmt(sy(y))}" r="4" fill="{color}"/>')
    parts.extend(_legend([name for name, _ in series], legend_x, pad_t + 10))
    parts.append("</svg>")
    return "".join(parts)
