"""Which event-time windows and triggers to use, as validated values.

:class:`WindowSpec` names the windows (fixed, sliding, session, global) and answers
the questions the windowing and the lateness rule ask of them: the Beam window
function, which events share exactly the same windows (:func:`cell_ids`), and the
window ends of an event or a piece. :class:`TriggerSpec` names when panes fire.
:class:`BatchSessions` is Beam's session merging for micro-batches.

>>> spec = WindowSpec("fixed", size_s=10.0)
>>> spec.window_ends_us(3_000_000, 4_000_000)
(10000000, 10000000)
>>> TriggerSpec(early_count=4, allowed_lateness_s=30.0).trigger()
AfterWatermark(early=AfterCount(4), late=AfterCount(1))
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from apache_beam.coders import coders
from apache_beam.transforms import trigger as tr
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import Duration, Timestamp

from model import batch as mb

WindowKind = Literal["fixed", "sliding", "session", "global"]


def _us(seconds: float) -> int:
    return round(seconds * mb.US_PER_SECOND)


@dataclass(frozen=True)
class WindowSpec:
    """Which event-time windows to use. Sizes are in seconds.

    ``frame`` (fixed windows): how many windows make one Beam window
    (:class:`FramedWindows`); 1, the default, makes every window a Beam window.
    """

    kind: WindowKind = "fixed"
    size_s: float = 10.0
    period_s: float | None = None
    gap_s: float = 10.0
    offset_s: float = 0.0
    frame: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "sliding", "session", "global"):
            msg = f"window kind must be fixed, sliding, session or global, got {self.kind!r}"
            raise ValueError(msg)
        if self.kind in ("fixed", "sliding") and self.size_s <= 0:
            msg = f"window size must be > 0, got {self.size_s!r}"
            raise ValueError(msg)
        if self.kind == "sliding":
            if self.period_s is None or self.period_s <= 0:
                msg = f"sliding windows need period_s > 0, got {self.period_s!r}"
                raise ValueError(msg)
            if self.period_s > self.size_s:
                msg = f"period_s ({self.period_s!r}) must be <= size_s ({self.size_s!r})"
                raise ValueError(msg)
        if not isinstance(self.frame, int) or self.frame < 1:
            msg = f"frame must be a whole number of windows >= 1, got {self.frame!r}"
            raise ValueError(msg)
        if self.frame > 1 and self.kind != "fixed":
            msg = f"only fixed windows can be framed, got {self.kind} windows, frame {self.frame}"
            raise ValueError(msg)
        if self.kind == "session" and self.gap_s <= 0:
            msg = f"session gap must be > 0, got {self.gap_s!r}"
            raise ValueError(msg)
        # Beam's runner APIs carry timestamps in milliseconds; boundaries must be too.
        for name in ("size_s", "period_s", "gap_s", "offset_s"):
            value = getattr(self, name)
            if value is not None and _us(value) % 1000:
                msg = f"{name} must be a whole number of milliseconds, got {value!r}"
                raise ValueError(msg)

    @property
    def step_s(self) -> float:
        """Distance between window starts (fixed: the size)."""
        return self.period_s if self.kind == "sliding" and self.period_s else self.size_s

    @functools.cached_property
    def _micros(self) -> tuple[int, int, int]:
        """(size, step, offset) in microseconds, worked out once: the windowing asks
        for them for every piece."""
        return _us(self.size_s), _us(self.step_s), _us(self.offset_s)

    def window_fn(self) -> bw.WindowFn:
        """Beam's window function, its bounds exact in microseconds (as seconds, a
        float such as 4.1 would not be)."""
        size, step, offset = (Duration(micros=us) for us in self._micros)
        if self.kind == "fixed" and self.frame > 1:
            return FramedWindows(size, self.frame, Timestamp(micros=offset.micros))
        if self.kind == "fixed":
            return bw.FixedWindows(size, Timestamp(micros=offset.micros))
        if self.kind == "sliding":
            return bw.SlidingWindows(size, step, Timestamp(micros=offset.micros))
        if self.kind == "session":
            return BatchSessions(self.gap_s)
        return bw.GlobalWindows()

    def window_bounds_us(self, t_us: int) -> tuple[int, int]:
        """(earliest end, latest end) of the windows holding an event at ``t_us``.

        Not for sessions, whose ends depend on the data.
        """
        if self.kind == "global":
            return (np.iinfo(np.int64).max, np.iinfo(np.int64).max)
        size, step, offset = self._micros
        last_start = offset + ((t_us - offset) // step) * step
        first_start = offset + ((t_us - offset - size) // step + 1) * step
        return first_start + size, last_start + size

    def fixed_window_ends_us(self, times_us: np.ndarray) -> np.ndarray:
        """The end of each event's (fixed, logical) window, for an array of times."""
        size, _, offset = self._micros
        return offset + ((times_us - offset) // size + 1) * size

    def window_ends_us(self, min_us: int, max_us: int) -> tuple[int, int]:
        """(earliest end, latest end) of the windows of a window-aligned piece whose
        events span ``[min_us, max_us]``: all its events share those windows. A
        session piece's window ends ``gap`` after its newest event."""
        if self.kind == "session":
            end = max_us + _us(self.gap_s)
            return end, end
        return self.window_bounds_us(min_us)


def cell_ids(spec: WindowSpec, times_us: Any) -> Any:
    """An id per row (``times_us``: an int64 array, or one int); rows with equal ids
    belong to exactly the same Beam windows (framed windows: the same frame)."""
    if spec.kind == "global":
        return times_us * 0
    size, step, offset = spec._micros
    last = (times_us - offset) // step
    if spec.kind == "fixed":
        return last // spec.frame if spec.frame > 1 else last
    first = (times_us - offset - size) // step
    # Windows holding t are starts j with first < j <= last; (last, last - first)
    # identifies the set, and last - first is at most ceil(size / step) + 1.
    span = math.ceil(spec.size_s / spec.step_s) + 2
    return last * span + (last - first)


class FramedWindows(bw.FixedWindows):
    """Fixed windows of ``window_size``, ``frame`` of them to one Beam window.

    To Beam (and to every runner: it is sent as fixed windows of the frame's size) a
    frame is the window: one element per frame's piece, one trigger, one side-input
    lookup. The logical windows inside a frame are a column, not elements: their
    statistics are computed per window in one vectorized pass
    (:func:`model.stats.by_window`), the lateness rule judges each event by its own
    window, and a learner steps through them in event-time order. So what a window
    costs no longer depends on how few events it holds: a sparse stream (a handful of
    events per window) runs as fast as a dense one. What a frame changes: panes fire
    per frame (a window's statistics come out when its frame ends), and a decoupled
    scorer reads the versions published at the previous frame's end.

    >>> fn = FramedWindows(10, 6)
    >>> fn.size.micros, fn.window_size.micros
    (60000000, 10000000)
    """

    def __init__(self, window_size: Any, frame: int, offset: Any = 0) -> None:
        size = Duration.of(window_size)
        super().__init__(Duration(micros=size.micros * frame), offset)
        self.window_size = size
        self.frame = frame

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FramedWindows) and (self.window_size, self.frame, self.offset) == (
            other.window_size,
            other.frame,
            other.offset,
        )

    def __hash__(self) -> int:
        return hash((FramedWindows, self.window_size, self.frame, self.offset))

    def __repr__(self) -> str:
        return f"FramedWindows({self.window_size} x {self.frame}, offset {self.offset})"


def window_size_us(fn: bw.WindowFn) -> int:
    """The size of the logical windows of fixed windows ``fn`` (a frame holds several)."""
    assert isinstance(fn, bw.FixedWindows)
    return int(fn.window_size.micros if isinstance(fn, FramedWindows) else fn.size.micros)


class BatchSessions(bw.WindowFn):
    """Session windows for single-key micro-batches: ``[min_t, max_t + gap)``, merged.

    Same merging rule as Beam's ``Sessions``; the window is computed from the batch's
    ``event_time`` column instead of the element timestamp.
    """

    def __init__(self, gap_s: float) -> None:
        if gap_s <= 0:
            msg = f"session gap must be > 0, got {gap_s!r}"
            raise ValueError(msg)
        self.gap_size = Duration(micros=_us(gap_s))

    def assign(self, context: bw.WindowFn.AssignContext) -> list[bw.IntervalWindow]:
        element = context.element
        if isinstance(element, tuple):  # KV(key, batch)
            element = element[1]
        times = mb.event_times_us(element)
        start = Timestamp(micros=int(times.min()))
        end = Timestamp(micros=int(times.max())) + self.gap_size
        return [bw.IntervalWindow(start, end)]

    def get_window_coder(self) -> coders.Coder:
        return coders.IntervalWindowCoder()

    def merge(self, merge_context: bw.WindowFn.MergeContext) -> None:
        to_merge: list[bw.BoundedWindow] = []
        end = Timestamp(micros=np.iinfo(np.int64).min)
        windows: list[bw.IntervalWindow] = list(merge_context.windows)  # type: ignore[arg-type]
        for w in sorted(windows, key=lambda w: w.start):
            if to_merge and end > w.start:
                to_merge.append(w)
                end = max(end, w.end)
                continue
            if len(to_merge) > 1:
                merge_context.merge(to_merge, bw.IntervalWindow(to_merge[0].start, end))
            to_merge, end = [w], w.end
        if len(to_merge) > 1:
            merge_context.merge(to_merge, bw.IntervalWindow(to_merge[0].start, end))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BatchSessions) and self.gap_size == other.gap_size

    def __hash__(self) -> int:
        return hash((BatchSessions, self.gap_size))


@dataclass(frozen=True)
class TriggerSpec:
    """When windows fire. Counts are in elements, i.e. micro-batch pieces.

    ``None`` everywhere gives Beam's default: one on-time pane when the watermark
    passes the end of the window. ``allowed_lateness_s > 0`` adds a late pane for
    every ``late_count`` late pieces.
    """

    early_count: int | None = None
    early_after_s: float | None = None
    late_count: int = 1
    allowed_lateness_s: float = 0.0
    accumulating: bool = False

    def __post_init__(self) -> None:
        if self.early_count is not None and self.early_count <= 0:
            msg = f"early_count must be > 0, got {self.early_count!r}"
            raise ValueError(msg)
        if self.early_after_s is not None and (
            self.early_after_s <= 0 or self.early_after_s != int(self.early_after_s)
        ):
            # Beam's runner API carries this delay in whole seconds.
            msg = f"early_after_s must be a whole number of seconds > 0, got {self.early_after_s!r}"
            raise ValueError(msg)
        if self.late_count <= 0:
            msg = f"late_count must be > 0, got {self.late_count!r}"
            raise ValueError(msg)
        if self.allowed_lateness_s < 0:
            msg = f"allowed_lateness_s must be >= 0, got {self.allowed_lateness_s!r}"
            raise ValueError(msg)

    def trigger(self) -> tr.TriggerFn:
        early: tr.TriggerFn | None = None
        parts: list[tr.TriggerFn] = []
        if self.early_count is not None:
            parts.append(tr.AfterCount(self.early_count))
        if self.early_after_s is not None:
            parts.append(tr.AfterProcessingTime(int(self.early_after_s)))
        if parts:
            early = parts[0] if len(parts) == 1 else tr.AfterAny(*parts)
        late = tr.AfterCount(self.late_count) if self.allowed_lateness_s > 0 else None
        if early is None and late is None:
            # Same panes as AfterWatermark(); runners have a fast path for the default.
            return tr.DefaultTrigger()
        return tr.AfterWatermark(early=early, late=late)

    @property
    def accumulation_mode(self) -> Any:  # a runner API enum value
        mode = tr.AccumulationMode
        return mode.ACCUMULATING if self.accumulating else mode.DISCARDING
