"""The report's SVG charts: well-formed drawings of every series, sized by pixels."""

from __future__ import annotations

from xml.etree import ElementTree

import numpy as np

from pipelines import svg

NS = "{http://www.w3.org/2000/svg}"


def _parse(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text)


def test_every_series_and_marker_is_drawn_and_named_in_the_legend():
    top = svg.Panel(ylabel="events", title="a <title> & more")
    top.line([0, 1, 2], [0, 5, 10], label="read")
    top.step([0, 1, 2], [1, 1, 3], label="version")
    bottom = svg.Panel(ylabel="score", ylim=(0, 1))
    bottom.points([0.5, 1.5], [0.2, 0.9], label="flagged")
    bottom.vline(1.0, label="alarm")
    bottom.span(0.2, 0.4, label="window")
    root = _parse(svg.figure([top, bottom]))
    text = "".join(root.itertext())
    for name in ("read", "version", "flagged", "alarm", "window", "a <title> & more"):
        assert name in text
    assert len(root.findall(f".//{NS}polyline")) == 2
    assert int(root.get("height")) == 2 * 250


def test_a_step_series_draws_its_changes_only():
    panel = svg.Panel()
    x = np.arange(10_000)
    panel.step(x, x // 2_500)  # 4 levels
    line = _parse(svg.figure([panel])).find(f".//{NS}polyline")
    assert line is not None
    corners = line.get("points", "").split()
    assert len(corners) <= 2 * 5  # two corners per level at most, and the end


def test_long_lines_are_reduced_to_the_pixels_keeping_their_extremes():
    x = np.arange(50_000, dtype=float)
    y = np.sin(x / 50.0)
    y[12_345] = 7.0  # a lone spike must survive
    rx, ry = svg.reduce_points(x, y, 600)
    assert len(rx) <= 4 * 600 and np.all(np.diff(rx) > 0)
    assert ry.max() == 7.0 and ry.min() == y.min() and rx[0] == 0 and rx[-1] == x[-1]
    panel = svg.Panel()
    panel.line(x, y)
    assert len(svg.figure([panel])) < 100_000


def test_points_on_one_pixel_are_one_circle():
    panel = svg.Panel()
    panel.points(np.zeros(5_000), np.zeros(5_000))
    panel.points([1.0], [1.0])
    assert len(_parse(svg.figure([panel])).findall(f".//{NS}circle")) == 2


def test_ticks_are_round_numbers_and_calendar_dates():
    assert svg.nice_ticks(0, 1) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert svg.nice_ticks(-3, 3) == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    day = 86_400 * svg.US_PER_S
    start = np.datetime64("1996-05-07", "us").astype(np.int64)
    ticks, labels = svg.date_ticks(start, start + 940 * day)  # Elec2's span
    assert labels == ["1996-07", "1997-01", "1997-07", "1998-01", "1998-07"]
    assert all(start <= t <= start + 940 * day for t in ticks)
    _, hours = svg.date_ticks(start, start + 6 * 3_600 * svg.US_PER_S)
    assert hours[0] == "00:00" and hours[-1] == "06:00"
    _, decades = svg.date_ticks(0, 60 * 365 * day)
    assert decades[0] == "1970" and all(len(d) == 4 for d in decades)


def test_nothing_to_draw_is_still_a_drawing():
    root = _parse(svg.figure([svg.Panel(ylabel="empty")]))
    assert root.tag == f"{NS}svg" and root.find(f".//{NS}polyline") is None
