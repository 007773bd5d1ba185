"""Small SVG charts for the run report: lines, steps, points, marker lines and spans
over a number or an event-time (UTC) axis, panels stacked on one shared x axis.

Written directly as SVG text: a report's figures take milliseconds whatever the
number of windows, and no plotting library is imported by the command line. Long
series are reduced to what the pixels can show (each pixel column's first, lowest,
highest and last point: the drawn envelope is the same).

>>> p = Panel(ylabel="accuracy", ylim=(0, 1))
>>> p.line([0, 1, 2], [0.5, 0.75, 1.0], label="ours")
>>> svg = figure([p])
>>> svg.startswith("<svg") and "ours" in svg and svg.count("<polyline") == 1
True
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.streams.time_scale import utc

Values = Sequence[float] | Sequence[int] | np.ndarray
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
US_PER_S = 1_000_000
_WIDTH, _PANEL_HEIGHT = 760, 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 28, 44  # margins (pixels)
_FONT = "font-family='sans-serif' font-size='11'"


@dataclass
class _Series:
    x: np.ndarray
    y: np.ndarray
    label: str | None
    color: str
    kind: str  # "line", "step" (held until the next point) or "points"
    markers: bool = False


@dataclass
class Panel:
    """One chart. ``dates``: x values are event times in microseconds (UTC)."""

    ylabel: str = ""
    xlabel: str = ""
    title: str = ""
    ylim: tuple[float, float] | None = None
    dates: bool = False
    series: list[_Series] = field(default_factory=list)
    vlines: list[tuple[float, str | None, str]] = field(default_factory=list)
    spans: list[tuple[float, float, str | None, str]] = field(default_factory=list)

    def _add(
        self,
        x: Values,
        y: Values,
        label: str | None,
        color: str | None,
        kind: str,
        markers: bool = False,
    ) -> None:
        xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if xs.shape != ys.shape or xs.ndim != 1:
            msg = f"x and y must be 1-D and of one length, got {xs.shape} and {ys.shape}"
            raise ValueError(msg)
        color = color or COLORS[len(self.series) % len(COLORS)]
        self.series.append(_Series(xs, ys, label, color, kind, markers))

    def line(
        self,
        x: Values,
        y: Values,
        label: str | None = None,
        color: str | None = None,
        markers: bool = False,
    ) -> None:
        self._add(x, y, label, color, "line", markers)

    def step(
        self, x: Values, y: Values, label: str | None = None, color: str | None = None
    ) -> None:
        self._add(x, y, label, color, "step")

    def points(
        self, x: Values, y: Values, label: str | None = None, color: str | None = None
    ) -> None:
        self._add(x, y, label, color, "points")

    def vline(self, x: float, label: str | None = None, color: str = "#d62728") -> None:
        self.vlines.append((float(x), label, color))

    def span(self, a: float, b: float, label: str | None = None, color: str = "#ffbb78") -> None:
        self.spans.append((float(a), float(b), label, color))


def nice_ticks(lo: float, hi: float, most: int = 7) -> list[float]:
    """Round values (1, 2 or 5 times a power of ten apart) covering [lo, hi].

    >>> nice_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(3, 47_000)
    [10000.0, 20000.0, 30000.0, 40000.0]
    """
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / max(1, most - 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(lo / step + 1e-9) * step
    count = int(math.floor((hi - first) / step + 1e-9)) + 1
    digits = max(0, 1 - math.floor(math.log10(step)))
    ticks = [round(first + i * step, digits) for i in range(count)]
    return [t for t in ticks if t >= lo - 1e-9 * step]


def _number(v: float) -> str:
    if abs(v) >= 10_000:
        return f"{v:,.0f}"
    return f"{v:.6g}" if abs(v) >= 1e-4 or v == 0 else f"{v:.1e}"


_MINUTE, _HOUR, _DAY = 60, 3_600, 86_400
_SECOND_STEPS = (  # time steps of date ticks, seconds to weeks
    *(1, 2, 5, 10, 15, 30),
    *(m * _MINUTE for m in (1, 2, 5, 10, 15, 30)),
    *(h * _HOUR for h in (1, 2, 3, 6, 12)),
    *(d * _DAY for d in (1, 2, 7, 14)),
)
_MONTH_STEPS = (1, 2, 3, 6, 12, 24, 60, 120, 240, 600, 1200)


def date_ticks(lo_us: float, hi_us: float, most: int = 8) -> tuple[list[float], list[str]]:
    """Event-time ticks on round calendar boundaries (UTC) and their labels, as many
    as fit ``most``: seconds to days as time steps, months and years as calendar ones.

    >>> date_ticks(0, 4 * 86400 * US_PER_S)[1]
    ['1970-01-01', '1970-01-02', '1970-01-03', '1970-01-04', '1970-01-05']
    >>> date_ticks(0, 1000 * 86400 * US_PER_S)[1]
    ['1970-01', '1970-07', '1971-01', '1971-07', '1972-01', '1972-07']
    >>> date_ticks(0, 90 * 60 * US_PER_S)[1][:3]
    ['00:00', '00:15', '00:30']
    """
    span_s = (hi_us - lo_us) / US_PER_S
    for step in _SECOND_STEPS:
        if span_s / step <= most - 1:
            first = math.ceil(lo_us / US_PER_S / step) * step
            ticks = [float(t) * US_PER_S for t in range(first, int(hi_us // US_PER_S) + 1, step)]
            fmt = "%Y-%m-%d" if step >= _DAY else "%H:%M" if step >= _MINUTE else "%H:%M:%S"
            if step < _DAY and span_s > _DAY:
                fmt = "%m-%d %H:%M"
            return ticks, [utc(t).strftime(fmt) for t in ticks]
    lo_m = np.datetime64(int(lo_us), "us").astype("datetime64[M]").astype(np.int64)
    hi_m = np.datetime64(int(hi_us), "us").astype("datetime64[M]").astype(np.int64)
    step = next((m for m in _MONTH_STEPS if (hi_m - lo_m) / m <= most - 1), _MONTH_STEPS[-1])
    months = [m for m in range(int(lo_m), int(hi_m) + 1) if m % step == 0]
    ticks = [float(np.datetime64(m, "M").astype("datetime64[us]").astype(np.int64)) for m in months]
    ticks = [t for t in ticks if t >= lo_us]
    fmt = "%Y" if step % 12 == 0 else "%Y-%m"
    return ticks, [utc(t).strftime(fmt) for t in ticks]


def reduce_points(x: np.ndarray, y: np.ndarray, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """At most four points per pixel column of a line: each column's first, lowest,
    highest and last, in x order (x sorted), so the drawn envelope is unchanged.

    >>> x = np.arange(1000.0); y = np.sin(x)
    >>> rx, ry = reduce_points(x, y, 10)
    >>> bool(len(rx) <= 40 and ry.max() == y.max() and ry.min() == y.min())
    True
    """
    if len(x) <= 4 * columns:
        return x, y
    span = x[-1] - x[0] or 1.0
    bins = np.minimum(((x - x[0]) / span * columns).astype(np.int64), columns - 1)
    starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    ends = np.r_[starts[1:], len(x)] - 1
    by_y = np.lexsort((y, bins))  # by column, then by y: each column's lowest, highest
    idx = np.unique(np.concatenate([starts, ends, by_y[starts], by_y[ends]]))
    return x[idx], y[idx]


def _steps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A step series as the corners of its path: each point held until the next x."""
    change = np.r_[True, y[1:] != y[:-1]]
    change[-1] = True
    x, y = x[change], y[change]
    cx = np.repeat(x, 2)[1:]
    cy = np.repeat(y, 2)[:-1]
    return cx, cy


def figure(
    panels: Sequence[Panel],
    *,
    width: int = _WIDTH,
    height: int = _PANEL_HEIGHT,
    share_x: bool = True,
) -> str:
    """The panels stacked, sharing the x range of everything drawn (``share_x``) or
    each on its own: SVG text."""
    total = height * len(panels)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' "
        f"height='{total}' viewBox='0 0 {width} {total}'>",
        f"<rect width='{width}' height='{total}' fill='white'/>",
    ]
    shared = _x_range(panels) if share_x else None
    for i, panel in enumerate(panels):
        x_lo, x_hi = shared or _x_range([panel])
        out.append(_panel(panel, x_lo, x_hi, i * height, width, height))
    out.append("</svg>\n")
    return "\n".join(out)


def _x_range(panels: Sequence[Panel]) -> tuple[float, float]:
    xs = [s.x for p in panels for s in p.series if len(s.x)]
    xs += [np.array([v[0] for v in p.vlines]) for p in panels if p.vlines]
    xs += [np.array([v for s in p.spans for v in s[:2]]) for p in panels if p.spans]
    x_all = np.concatenate(xs) if xs else np.zeros(1)
    x_lo, x_hi = float(np.nanmin(x_all)), float(np.nanmax(x_all))
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    return x_lo, x_hi


def write(path: str, panels: Sequence[Panel], **kwargs: Any) -> str:
    """Write :func:`figure` to ``path``; its file name."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(figure(panels, **kwargs))
    return os.path.basename(path)


def _panel(p: Panel, x_lo: float, x_hi: float, top: int, w: int, h: int) -> str:
    x0, x1 = _LEFT, w - _RIGHT
    y0, y1 = top + h - _BOTTOM, top + _TOP  # y grows down: y0 is the axis
    ys = [s.y[np.isfinite(s.y)] for s in p.series]
    ys = [y for y in ys if len(y)]
    if p.ylim is not None:
        y_lo, y_hi = p.ylim
    elif ys:
        y_lo, y_hi = float(min(y.min() for y in ys)), float(max(y.max() for y in ys))
        pad = (y_hi - y_lo) * 0.05 or max(abs(y_hi) * 0.05, 1.0)
        y_lo, y_hi = y_lo - pad, y_hi + pad
    else:
        y_lo, y_hi = 0.0, 1.0

    def px(x: Any) -> Any:
        return x0 + (np.asarray(x) - x_lo) / (x_hi - x_lo) * (x1 - x0)

    def py(y: Any) -> Any:
        return y0 - (np.clip(np.asarray(y), y_lo, y_hi) - y_lo) / (y_hi - y_lo) * (y0 - y1)

    out = [f"<g {_FONT}>"]
    for a, b, _, color in p.spans:
        out.append(
            f"<rect x='{px(a):.1f}' y='{y1}' width='{max(px(b) - px(a), 1.0):.1f}' "
            f"height='{y0 - y1}' fill='{color}' fill-opacity='0.5'/>"
        )
    if p.dates:
        xt, xl = date_ticks(x_lo, x_hi)
    else:
        xt = nice_ticks(x_lo, x_hi)
        xl = [_number(t) for t in xt]
    for t, label in zip(xt, xl, strict=True):
        x = px(t)
        out.append(
            f"<line x1='{x:.1f}' x2='{x:.1f}' y1='{y0}' y2='{y1}' stroke='#eee'/>"
            f"<text x='{x:.1f}' y='{y0 + 14}' text-anchor='middle'>"
            f"{html.escape(label)}</text>"
        )
    for t in nice_ticks(y_lo, y_hi, 6):
        y = py(t)
        out.append(
            f"<line x1='{x0}' x2='{x1}' y1='{y:.1f}' y2='{y:.1f}' stroke='#eee'/>"
            f"<text x='{x0 - 5}' y='{y + 4:.1f}' text-anchor='end'>{_number(t)}</text>"
        )
    out.append(
        f"<rect x='{x0}' y='{y1}' width='{x1 - x0}' height='{y0 - y1}' fill='none' stroke='#444'/>"
    )
    for s in p.series:
        ok = np.isfinite(s.x) & np.isfinite(s.y)
        x, y = s.x[ok], s.y[ok]
        if not len(x):
            continue
        if s.kind == "points":  # one circle per pixel however many points fall on it
            at = np.unique(np.round(np.column_stack([px(x), py(y)])), axis=0)
            out.extend(f"<circle cx='{a:.0f}' cy='{b:.0f}' r='2' fill='{s.color}'/>" for a, b in at)
            continue
        x, y = _steps(x, y) if s.kind == "step" else reduce_points(x, y, x1 - x0)
        coords = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px(x), py(y), strict=True))
        out.append(
            f"<polyline points='{coords}' fill='none' stroke='{s.color}' stroke-width='1.5'/>"
        )
        if s.markers:
            out.extend(
                f"<circle cx='{a:.1f}' cy='{b:.1f}' r='2.5' fill='{s.color}'/>"
                for a, b in zip(px(x), py(y), strict=True)
            )
    for x, _, color in p.vlines:
        out.append(
            f"<line x1='{px(x):.1f}' x2='{px(x):.1f}' y1='{y0}' y2='{y1}' "
            f"stroke='{color}' stroke-dasharray='4 3'/>"
        )
    out.append(_legend(p, x0 + 8, y1 + 6))
    if p.title:
        out.append(
            f"<text x='{(x0 + x1) / 2}' y='{top + 16}' text-anchor='middle' "
            f"font-size='12'>{html.escape(p.title)}</text>"
        )
    if p.xlabel:
        out.append(
            f"<text x='{(x0 + x1) / 2}' y='{y0 + 32}' text-anchor='middle'>"
            f"{html.escape(p.xlabel)}</text>"
        )
    if p.ylabel:
        mid = (y0 + y1) / 2
        out.append(
            f"<text x='14' y='{mid}' text-anchor='middle' "
            f"transform='rotate(-90 14 {mid})'>{html.escape(p.ylabel)}</text>"
        )
    out.append("</g>")
    return "".join(out)


def _legend(p: Panel, x: float, y: float) -> str:
    entries = [
        (s.label, s.color, "dot" if s.kind == "points" else "line") for s in p.series if s.label
    ]
    entries += [(label, color, "dash") for _, label, color in p.vlines if label]
    entries += [(label, color, "box") for _, _, label, color in p.spans if label]
    if not entries:
        return ""
    out = [
        f"<rect x='{x}' y='{y}' width='{24 + 7 * max(len(e[0]) for e in entries)}' "
        f"height='{6 + 15 * len(entries)}' fill='white' fill-opacity='0.85' stroke='#ccc'/>"
    ]
    for i, (label, color, kind) in enumerate(entries):
        cy = y + 12 + 15 * i
        if kind == "box":
            out.append(f"<rect x='{x + 4}' y='{cy - 5}' width='14' height='9' fill='{color}'/>")
        elif kind == "dot":
            out.append(f"<circle cx='{x + 11}' cy='{cy}' r='3' fill='{color}'/>")
        else:
            dash = " stroke-dasharray='4 3'" if kind == "dash" else ""
            out.append(
                f"<line x1='{x + 4}' x2='{x + 18}' y1='{cy}' y2='{cy}' "
                f"stroke='{color}' stroke-width='2'{dash}/>"
            )
        out.append(f"<text x='{x + 22}' y='{cy + 4}'>{html.escape(label)}</text>")
    return "".join(out)
