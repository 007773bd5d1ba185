"""A stream's own time scale, and the window size that fits it.

A user who gives no window size gets one from the data: the typical spacing of its
first timestamps (the median gap between distinct event times) times the number of
events a window should hold, rounded to a round duration. Dense and sparse streams
then get windows of about as many events each: a half-hourly stream gets windows of
hours, a daily one of weeks, where a fixed default (seconds) would give a sparse
stream one event per window.

>>> import numpy as np
>>> day = 86_400 * 1_000_000
>>> scale = fit_window(np.arange(100) * day)
>>> scale.spacing_s / 86_400, scale.window_s / 86_400, scale.events_per_window
(1.0, 28.0, 28.0)
>>> fit_window(np.arange(100) * 1_800 * 1_000_000).describe()
'windows of 12 h (the data: an event every 30 min, about 24 per window)'
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np

EVENTS_PER_WINDOW = 32  # what a window should hold: enough to learn from, few enough to be fresh
# what a frame (one Beam window) should hold where no scorer waits for the frame's
# model (coupled learning, scoring alone): Beam's per-window costs spread thin
EVENTS_PER_FRAME = 4_096
# the longest a frame of a live stream may span (event time, there about wall time): a
# frame's statistics and learning come out at its end
LIVE_FRAME_S = 1.0

_MINUTE, _HOUR, _DAY = 60.0, 3_600.0, 86_400.0
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
ROUND_DURATIONS_S: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30,
    _MINUTE, 2 * _MINUTE, 5 * _MINUTE, 10 * _MINUTE, 15 * _MINUTE, 30 * _MINUTE,
    _HOUR, 2 * _HOUR, 3 * _HOUR, 6 * _HOUR, 12 * _HOUR,
    _DAY, 2 * _DAY, 7 * _DAY, 14 * _DAY, 28 * _DAY, 56 * _DAY, 91 * _DAY, 182 * _DAY, 364 * _DAY,
)  # fmt: skip


@dataclass(frozen=True)
class TimeScale:
    """The typical spacing of events and the window chosen for it (seconds)."""

    spacing_s: float
    window_s: float
    events_per_window: float

    def describe(self) -> str:
        return (
            f"windows of {duration(self.window_s)} (the data: an event every "
            f"{duration(self.spacing_s)}, about {self.events_per_window:.0f} per window)"
        )


def typical_spacing_s(times_us: np.ndarray) -> tuple[float, float] | None:
    """The median gap between distinct event times (seconds), and the events per
    distinct time; None with fewer than two distinct times."""
    distinct = np.unique(np.asarray(times_us, dtype=np.int64))
    if len(distinct) < 2:
        return None
    gap_us = float(np.median(np.diff(distinct)))
    return gap_us / 1e6, len(times_us) / len(distinct)


def round_duration(seconds: float) -> float:
    """The round duration nearest to ``seconds`` (on a log scale)."""
    return min(ROUND_DURATIONS_S, key=lambda d: abs(math.log(d / seconds)))


def fit_window(times_us: np.ndarray, events_per_window: int = EVENTS_PER_WINDOW) -> TimeScale:
    """The window for a stream whose first event times are ``times_us``; ``ValueError``
    when they are too few to tell (fewer than two distinct times)."""
    spacing = typical_spacing_s(times_us)
    if spacing is None:
        msg = "cannot tell the data's time scale from fewer than two distinct timestamps"
        raise ValueError(msg)
    gap_s, per_time = spacing
    window_s = round_duration(max(gap_s * events_per_window / per_time, 0.001))
    return TimeScale(gap_s, window_s, window_s / gap_s * per_time)


def fit_frame(window_s: float, times_us: np.ndarray, frame_events: int = EVENTS_PER_WINDOW) -> int:
    """How many windows of ``window_s`` to put in one frame (one Beam window, see
    ``transforms.window.spec.FramedWindows``) so that a frame holds about
    ``frame_events`` events of a stream whose first event times are ``times_us``:
    1 when a window holds that many already (or the scale cannot be told).

    >>> second = 1_000_000
    >>> fit_frame(1.0, np.arange(100) * second), fit_frame(64.0, np.arange(100) * second)
    (32, 1)
    """
    spacing = typical_spacing_s(times_us)
    if spacing is None:
        return 1
    gap_s, per_time = spacing
    per_window = window_s / gap_s * per_time
    return max(1, math.floor(frame_events / per_window))


def utc(us: float) -> dt.datetime:
    """The UTC date-time of an event time in microseconds since the epoch (exact, and
    for times before 1970 too).

    >>> utc(86_400_000_001).isoformat()
    '1970-01-02T00:00:00.000001+00:00'
    """
    return _EPOCH + dt.timedelta(microseconds=int(us))


def duration(seconds: float) -> str:
    """``seconds`` in the largest unit that keeps it readable."""
    for unit, size in (("days", _DAY), ("h", _HOUR), ("min", _MINUTE), ("s", 1.0)):
        if seconds >= size:
            value = seconds / size
            text = f"{value:.0f}" if value == round(value) else f"{value:.3g}"
            return f"{text} {unit}" if unit != "days" or text != "1" else "1 day"
    return f"{seconds * 1000:.3g} ms"
