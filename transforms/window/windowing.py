"""Event-time windowing of micro-batches.

Beam assigns windows by element timestamp, so a micro-batch may only carry events
that belong to exactly the same windows. :func:`split_batch` cuts every batch at the
window boundaries (sliding windows: at every window start *and* end, so all rows of
a piece share one set of windows) and :class:`EventTimeWindow` stamps each piece
with its smallest event time and gives it the windows Beam's own window function
assigns to that time (in the same pass, so no separate ``WindowInto`` step touches
every piece), under the configured trigger. Windows, triggers, watermarks and
lateness are therefore exactly Beam's, at batch granularity.

Session windows cannot be split on time alone: sessions are per key and their
extent depends on the data. Here batches are split per key and wherever two
consecutive events of a key are at least ``gap`` apart; each piece gets the window
``[min_event_time, max_event_time + gap)`` from :class:`BatchSessions` (which reads
the batch, not just its timestamp), and Beam merges overlapping windows per key as
it does for single events. Downstream grouping must be keyed by ``key``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import coders
from apache_beam.transforms import trigger as tr
from apache_beam.transforms import window as bw
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from model import batch as mb
from transforms.io import coders as _coders  # noqa: F401  (registers the batch coder)
from transforms.window import lateness

WindowKind = Literal["fixed", "sliding", "session", "global"]


def _us(seconds: float) -> int:
    return round(seconds * mb.US_PER_SECOND)


@dataclass(frozen=True)
class WindowSpec:
    """Which event-time windows to use. Sizes are in seconds."""

    kind: WindowKind = "fixed"
    size_s: float = 10.0
    period_s: float | None = None
    gap_s: float = 10.0
    offset_s: float = 0.0

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

    def window_fn(self) -> bw.WindowFn:
        if self.kind == "fixed":
            return bw.FixedWindows(self.size_s, self.offset_s)
        if self.kind == "sliding":
            return bw.SlidingWindows(self.size_s, self.step_s, self.offset_s)
        if self.kind == "session":
            return BatchSessions(self.gap_s)
        return bw.GlobalWindows()

    def window_bounds_us(self, t_us: int) -> tuple[int, int]:
        """(earliest end, latest end) of the windows holding an event at ``t_us``.

        Not for sessions, whose ends depend on the data.
        """
        if self.kind == "global":
            return (np.iinfo(np.int64).max, np.iinfo(np.int64).max)
        size, step, offset = _us(self.size_s), _us(self.step_s), _us(self.offset_s)
        last_start = offset + ((t_us - offset) // step) * step
        first_start = offset + ((t_us - offset - size) // step + 1) * step
        return first_start + size, last_start + size


def cell_ids(spec: WindowSpec, times_us: Any) -> Any:
    """An id per row (``times_us``: an int64 array, or one int); rows with equal ids
    belong to exactly the same windows."""
    if spec.kind == "global":
        return times_us * 0
    step, offset = _us(spec.step_s), _us(spec.offset_s)
    last = (times_us - offset) // step
    if spec.kind == "fixed":
        return last
    first = (times_us - offset - _us(spec.size_s)) // step
    # Windows holding t are starts j with first < j <= last; (last, last - first)
    # identifies the set, and last - first is at most ceil(size / step) + 1.
    span = math.ceil(spec.size_s / spec.step_s) + 2
    return last * span + (last - first)


def _session_cells(gap_us: int, key_codes: np.ndarray, times_us: np.ndarray) -> np.ndarray:
    """Rows sorted by (key, time) get a new id at each key change or gap >= ``gap_us``."""
    order = np.lexsort((times_us, key_codes))
    k, t = key_codes[order], times_us[order]
    new_piece = np.ones(len(order), dtype=bool)
    new_piece[1:] = (k[1:] != k[:-1]) | (t[1:] - t[:-1] >= gap_us)
    cells = np.empty(len(order), dtype=np.int64)
    cells[order] = np.cumsum(new_piece)
    return cells


def split_batch(batch: pa.RecordBatch, spec: WindowSpec) -> list[pa.RecordBatch]:
    """Pieces of ``batch`` that never straddle a window (or session) boundary.

    Row order is kept within each piece. A batch that already fits is returned as is.
    """
    return [piece for piece, *_ in _split(batch, spec)]


Piece = tuple[pa.RecordBatch, int, int, int]


def _split(batch: pa.RecordBatch, spec: WindowSpec) -> list[Piece]:
    """:func:`split_batch`'s pieces as ``(piece, smallest event time, largest, cell)``:
    what stamping, judging and assigning windows need, from one pass over the times
    (``cell``: equal cells, equal windows; sessions: per key and gap, see above)."""
    if batch.num_rows == 0:
        return []
    times = mb.event_times_us(batch)
    if spec.kind == "session":
        cells = _session_cells(_us(spec.gap_s), mb.key_codes(batch)[0], times)
    else:
        cells = cell_ids(spec, times)
    if not (cells[1:] != cells[:-1]).any():
        return [(batch, int(times.min()), int(times.max()), int(cells[0]))]
    if np.all(cells[1:] >= cells[:-1]):  # already grouped: zero-copy slices
        ordered, cells_in_order, times_in_order = batch, cells, times
    else:  # one gather, then slices
        order = np.argsort(cells, kind="stable")
        ordered, cells_in_order, times_in_order = mb.take(batch, order), cells[order], times[order]
    starts = np.flatnonzero(cells_in_order[1:] != cells_in_order[:-1]) + 1
    starts = np.concatenate(([0], starts))
    ends = [*starts[1:].tolist(), len(cells_in_order)]
    lows = np.minimum.reduceat(times_in_order, starts).tolist()
    highs = np.maximum.reduceat(times_in_order, starts).tolist()
    return [
        (ordered.slice(a, b - a), lo, hi, cell)
        for a, b, lo, hi, cell in zip(
            starts.tolist(), ends, lows, highs, cells_in_order[starts].tolist(), strict=True
        )
    ]


class BatchSessions(bw.WindowFn):
    """Session windows for single-key micro-batches: ``[min_t, max_t + gap)``, merged.

    Same merging rule as Beam's ``Sessions``; the window is computed from the batch's
    ``event_time`` column instead of the element timestamp.
    """

    def __init__(self, gap_s: float) -> None:
        if gap_s <= 0:
            msg = f"session gap must be > 0, got {gap_s!r}"
            raise ValueError(msg)
        self.gap_size = Duration.of(gap_s)

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


@dataclass(frozen=True)
class WindowOut:
    """``batches``: windowed micro-batches; ``dropped``: dead-letter rows for events
    whose windows had expired when they arrived."""

    batches: beam.PCollection
    dropped: beam.PCollection


class _SplitStampGateDoFn(beam.DoFn):
    """Splits at window boundaries, stamps each piece with its smallest event time and
    judges its lateness. With ``windowing`` (non-merging windows) it also assigns each
    piece its windows, found once per cell by the window function itself, so no
    separate ``WindowInto`` pass touches every element."""

    def __init__(
        self, spec: WindowSpec, allowed_lateness_s: float, windowing: Windowing | None = None
    ) -> None:
        self._spec = spec
        self._lateness_us = _us(allowed_lateness_s)
        self._window_fn = None if windowing is None else windowing.windowfn
        self._windows: dict[int, tuple[bw.BoundedWindow, ...]] = {}

    def _windows_of(self, cell: int, timestamp: Timestamp) -> tuple[bw.BoundedWindow, ...]:
        windows = self._windows.get(cell)
        if windows is None:
            if len(self._windows) >= 1024:
                self._windows.clear()
            assert self._window_fn is not None
            windows = tuple(self._window_fn.assign(bw.WindowFn.AssignContext(timestamp)))
            self._windows[cell] = windows
        return windows

    def process(self, batch: pa.RecordBatch) -> Iterator[object]:
        watermark = lateness.watermark_of(batch)
        for piece, lo, hi, cell in _split(batch, self._spec):
            verdict = lateness.classify(self._spec, lo, hi, watermark, self._lateness_us)
            lateness.count(verdict, piece.num_rows)
            if verdict == lateness.EXPIRED:
                yield beam.pvalue.TaggedOutput(
                    "dropped", lateness.dead_letter(piece, watermark, self._lateness_us)
                )
                continue
            timestamp = Timestamp(micros=lo)
            if self._window_fn is None:
                yield bw.TimestampedValue(piece, timestamp)
            else:
                yield WindowedValue(piece, timestamp, self._windows_of(cell, timestamp))


class _AssigningParDo(beam.ParDo):
    """A ParDo whose DoFn assigns the windows itself: its outputs carry ``windowing``,
    as ``beam.WindowInto``'s do (which is a ParDo with the same override)."""

    def __init__(self, fn: beam.DoFn, windowing: Windowing) -> None:
        super().__init__(fn)
        self.assigned_windowing = windowing

    def get_windowing(self, unused_inputs: Any) -> Windowing:
        return self.assigned_windowing


class EventTimeWindow(beam.PTransform):
    """Split, stamp and window micro-batches; set aside events that arrive too late.

    Input: micro-batches (optionally carrying the source watermark, see
    :mod:`transforms.window.lateness`). Output: :class:`WindowOut`.

    Fixed, sliding and global windows are assigned in the splitting pass itself;
    sessions, whose windows Beam merges, go through ``WindowInto``.
    """

    def __init__(self, window: WindowSpec, trigger: TriggerSpec | None = None) -> None:
        super().__init__()
        self._window = window
        self._trigger = trigger or TriggerSpec()

    def expand(self, batches: beam.PCollection) -> WindowOut:  # type: ignore[override]
        t = self._trigger
        windowing = Windowing(
            self._window.window_fn(),
            triggerfn=t.trigger(),
            accumulation_mode=t.accumulation_mode,
            allowed_lateness=t.allowed_lateness_s,
        )
        merging = windowing.windowfn.is_merging()
        if merging:
            split = beam.ParDo(_SplitStampGateDoFn(self._window, t.allowed_lateness_s))
        else:
            split = _AssigningParDo(
                _SplitStampGateDoFn(self._window, t.allowed_lateness_s, windowing), windowing
            )
        pieces = batches | "SplitAtBoundaries" >> split.with_output_types(
            pa.RecordBatch
        ).with_outputs("dropped", main="pieces")
        if merging:
            windowed = pieces.pieces | "WindowInto" >> beam.WindowInto(
                windowing.windowfn,
                trigger=windowing.triggerfn,
                accumulation_mode=windowing.accumulation_mode,
                allowed_lateness=windowing.allowed_lateness,
            )
            return WindowOut(batches=windowed, dropped=pieces.dropped)
        # The dead letters keep their input's windows (Beam propagates them), but a
        # ParDo names one windowing for all its outputs. A PCollection keeps its
        # windowing in ``_windowing`` (its constructor's ``windowing``), read by every
        # runner from there: set the input's, rather than re-window every dead letter
        # in a step that the streaming DirectRunner runs (empty) for every bundle.
        pieces.dropped._windowing = batches.windowing
        return WindowOut(batches=pieces.pieces, dropped=pieces.dropped)
