"""Per key and window statistics of scored micro-batches, one row per fired pane.

This is the windowed aggregation whose panes show the trigger at work: each output
row says which pane it is (EARLY, ON_TIME or LATE, and its index), how many events
the pane covers, their mean score, for labelled events the accuracy, and the range
of model versions that scored them. The arithmetic is :mod:`model.stats`'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.utils.windowed_value import PaneInfoTiming

from model.stats import (
    Partial,
    Stats,
    StatsTable,
    partial_stats,
    stats_rows,
    window_stats_rows,
)
from model.vocabulary import NAMESPACE, Metric, Pane
from transforms.window.spec import FramedWindows

_ALL = ""  # the one grouping key of non-merging windows: every key's partials together
_TIMING = {
    PaneInfoTiming.EARLY: Pane.EARLY,
    PaneInfoTiming.ON_TIME: Pane.ON_TIME,
    PaneInfoTiming.LATE: Pane.LATE,
    PaneInfoTiming.UNKNOWN: Pane.UNKNOWN,
}


class _MergeStats(beam.CombineFn):
    """Adds per-key partials ``(keys, rows)`` into a :class:`StatsTable`."""

    def create_accumulator(self) -> StatsTable:
        return StatsTable()

    def add_input(self, acc: StatsTable, value: Partial) -> StatsTable:
        return acc.add(value)

    def merge_accumulators(self, accs: Any) -> StatsTable:
        accs = iter(accs)
        merged = next(accs, None) or StatsTable()
        for acc in accs:
            merged.add(acc.partial())
        return merged

    def extract_output(self, acc: StatsTable) -> Stats:
        return acc.stats()


class _FormatPaneDoFn(beam.DoFn):
    """``window_us``: framed windows' size (their stats are per window and key)."""

    def __init__(self, window_us: int = 0) -> None:
        self._window_us = window_us
        self._panes = beam.metrics.Metrics.counter(NAMESPACE, Metric.WINDOWS_FIRED)

    def process(
        self,
        kv: tuple[str, Stats],
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[pa.RecordBatch]:
        timing = _TIMING.get(pane.timing, Pane.UNKNOWN)
        if self._window_us:
            rows = window_stats_rows(
                kv[1], self._window_us, timing, int(pane.index), bool(pane.is_last)
            )
        else:
            start = getattr(window, "start", None)
            end = getattr(window, "end", None)
            rows = stats_rows(
                kv[1],
                None if start is None else int(start.micros),
                None if end is None else int(end.micros),
                timing,
                int(pane.index),
                bool(pane.is_last),
            )
        self._panes.inc(rows.num_rows)
        if rows.num_rows:
            yield rows


def _for_all_keys(batch: pa.RecordBatch) -> tuple[str, Partial]:
    # A module function, not a lambda: the streaming DirectRunner pickles each step's
    # function for every bundle, a lambda by value (its code), a function by name.
    return _ALL, partial_stats(batch)


def _per_window(batch: pa.RecordBatch, window_us: int, offset_us: int) -> tuple[str, Partial]:
    return _ALL, partial_stats(batch, window_us, offset_us)


def _by_key(batch: pa.RecordBatch) -> Iterator[tuple[str, Partial]]:
    part = partial_stats(batch)
    for i, key in enumerate(part.keys):
        yield key, Partial([key], part.rows[i : i + 1])


class WindowStats(beam.PTransform):
    """Windowed (scored) batches in; out, per fired pane, one Arrow batch of rows
    (:data:`model.stats.STATS_SCHEMA`), a row per key and window.

    Framed windows (:class:`~transforms.window.spec.FramedWindows`) give one row per
    window inside the frame (and key), from the frame's pane. Each batch is reduced to
    per-key partial sums first. With fixed, sliding or global
    windows the partials of a window are merged under one grouping key (one element per
    batch into the GroupByKey, not one per event or per key); merging windows
    (sessions) are grouped per key, as Beam merges them per key.
    """

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        fn = batches.windowing.windowfn
        window_us = 0
        if fn.is_merging():
            partials = batches | "PartialStats" >> beam.FlatMap(_by_key)
        elif isinstance(fn, FramedWindows):
            window_us, offset_us = fn.window_size.micros, fn.offset.micros
            partials = batches | "PartialStats" >> beam.Map(_per_window, window_us, offset_us)
        else:
            partials = batches | "PartialStats" >> beam.Map(_for_all_keys)
        return (
            partials
            | "MergePerWindow" >> beam.CombinePerKey(_MergeStats())
            | "FormatPane" >> beam.ParDo(_FormatPaneDoFn(window_us))
        )
