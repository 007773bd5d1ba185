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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms import window as bw
from apache_beam.transforms.core import Windowing
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from model import batch as mb
from model.vocabulary import DeadLetter
from transforms.io import coders as _coders  # noqa: F401  (registers the batch coder)
from transforms.window import lateness
from transforms.window.spec import TriggerSpec, WindowSpec, cell_ids


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
        cells = _session_cells(round(spec.gap_s * mb.US_PER_SECOND), mb.key_codes(batch)[0], times)
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
        self._lateness_us = round(allowed_lateness_s * mb.US_PER_SECOND)
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
        watermark = mb.watermark_of(batch)
        framed = self._spec.frame > 1 and watermark is not None
        for piece, lo, hi, cell in _split(batch, self._spec):
            if framed:  # each event judged by its own window, not by the frame's
                assert watermark is not None
                yield from self._judge_rows(piece, cell, watermark)
                continue
            verdict = lateness.classify(self._spec, lo, hi, watermark, self._lateness_us)
            lateness.count(verdict, piece.num_rows)
            if verdict == lateness.Verdict.EXPIRED:
                yield self._dropped(piece, lo, cell, watermark)
                continue
            yield self._windowed(piece, lo, cell)

    def _judge_rows(self, piece: pa.RecordBatch, cell: int, watermark: int) -> Iterator[object]:
        expired = lateness.classify_rows(self._spec, piece, watermark, self._lateness_us)
        if expired is None:
            yield self._windowed(piece, int(mb.event_times_us(piece).min()), cell)
            return
        gone, kept = (
            mb.take(piece, np.flatnonzero(expired)),
            mb.take(piece, np.flatnonzero(~expired)),
        )
        yield self._dropped(gone, int(mb.event_times_us(gone).min()), cell, watermark)
        if kept.num_rows:
            yield self._windowed(kept, int(mb.event_times_us(kept).min()), cell)

    def _windowed(self, piece: pa.RecordBatch, lo: int, cell: int) -> object:
        timestamp = Timestamp(micros=lo)
        if self._window_fn is None:
            return bw.TimestampedValue(piece, timestamp)
        return WindowedValue(piece, timestamp, self._windows_of(cell, timestamp))

    def _dropped(
        self, piece: pa.RecordBatch, lo: int, cell: int, watermark: int | None
    ) -> beam.pvalue.TaggedOutput:
        record: object = lateness.dead_letter(piece, watermark, self._lateness_us)
        if self._window_fn is not None:
            # stamped at its earliest event, in one window of the windowing this
            # ParDo declares (the piece's first, expired), so that every output
            # carries what its PCollection says; EventTimeWindow then puts it into
            # the input's windowing
            at = Timestamp(micros=lo)
            record = WindowedValue(record, at, self._windows_of(cell, at)[:1])
        return beam.pvalue.TaggedOutput("dropped", record)


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

    def expand(self, batches: beam.PCollection) -> WindowOut:
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
            pa.RecordBatch, dropped=DeadLetter
        ).with_outputs("dropped", main="pieces")
        if merging:
            windowed = pieces.pieces | "WindowInto" >> beam.WindowInto(
                windowing.windowfn,
                trigger=windowing.triggerfn,
                accumulation_mode=windowing.accumulation_mode,
                allowed_lateness=windowing.allowed_lateness,
            )
            return WindowOut(batches=windowed, dropped=pieces.dropped)
        # A ParDo declares one windowing for all of its outputs, so the dead letters
        # came out in the pieces' windowing; their own is the input's, so that they
        # flatten with other dead letters (and runners encode each with the coder of
        # the windows it carries).
        w = batches.windowing
        dropped = pieces.dropped | "DeadLetterWindows" >> beam.WindowInto(
            w.windowfn,
            trigger=w.triggerfn,
            accumulation_mode=w.accumulation_mode,
            timestamp_combiner=w.timestamp_combiner,
            allowed_lateness=w.allowed_lateness,
        )
        return WindowOut(batches=pieces.pieces, dropped=dropped)
