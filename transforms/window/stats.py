"""Per key and window statistics of scored micro-batches, one row per fired pane.

This is the windowed aggregation whose panes show the trigger at work: each output
row says which pane it is (EARLY, ON_TIME or LATE, and its index), how many events
the pane covers, their mean score, for labelled events the accuracy, and the range
of model versions that scored them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.windowed_value import PaneInfoTiming

from model import batch as mb
from transforms.inference.streaming import MODEL_VERSION, PREDICTION, SCORE
from transforms.window.lateness import NAMESPACE

# events, sum of scores, labelled events, correct predictions, min and max version
_WIDTH = 6
_NO_VERSION = (np.inf, -np.inf)
_ALL = ""
_TIMING = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    PaneInfoTiming.UNKNOWN: "UNKNOWN",
}
Stats = dict[str, np.ndarray]


@dataclass(frozen=True)
class Partial:
    """One batch's stats: the keys, and one row per key
    ``[events, sum_score, labelled, correct, min_version, max_version]``. Never
    changed once made, so a copy is the object itself: Beam's reference streaming
    runner deep-copies the grouping state (every buffered partial) for each bundle."""

    keys: list[str]
    rows: np.ndarray

    def __deepcopy__(self, memo: dict[int, Any]) -> Partial:
        return self

    def as_stats(self) -> Stats:
        """``{key: row}``."""
        return dict(zip(self.keys, self.rows, strict=True))


def partial_stats(batch: pa.RecordBatch) -> Partial:
    """The per-key stats of a batch. Batches without ``score``/``prediction``/
    ``model_version`` columns (unscored) count events only."""
    names = batch.schema.names

    def column(name: str) -> np.ndarray | None:
        return batch.column(name).to_numpy(zero_copy_only=False) if name in names else None

    prediction = column(PREDICTION)
    labels = None if prediction is None else mb.labels_numpy(batch)
    return stats_of(
        *mb.key_codes(batch),
        score=column(SCORE),
        correct=None if labels is None or prediction is None else labels == prediction,
        versions=column(MODEL_VERSION),
    )


def stats_of(
    codes: np.ndarray,
    keys: list[str],
    *,
    score: np.ndarray | None = None,
    correct: np.ndarray | None = None,
    versions: np.ndarray | int | None = None,
) -> Partial:
    """:func:`partial_stats` from arrays (one per row; ``versions`` may be one int for
    every row): for a step that has them at hand, without going through Arrow."""
    k = len(keys)
    stats = np.empty((k, _WIDTH), dtype=np.float64)
    stats[:, 1:4] = 0.0
    stats[:, 4:] = _NO_VERSION
    stats[:, 0] = np.bincount(codes, minlength=k)
    if score is not None:
        stats[:, 1] = np.bincount(codes, weights=score, minlength=k)
    if correct is not None:
        stats[:, 2] = stats[:, 0]
        stats[:, 3] = np.bincount(codes, weights=correct, minlength=k)
    if versions is not None and len(codes):
        if isinstance(versions, int | np.integer):
            low = high = versions
        else:
            low, high = versions.min(), versions.max()
        if low == high:  # the usual case: one version scored the whole batch
            present = stats[:, 0] > 0
            stats[present, 4], stats[present, 5] = low, high
        else:
            assert isinstance(versions, np.ndarray)
            order, bounds = mb.group_bounds(codes, k)
            present = bounds[1:] > bounds[:-1]
            starts, ordered = bounds[:-1][present], versions[order]
            stats[present, 4] = np.minimum.reduceat(ordered, starts)
            stats[present, 5] = np.maximum.reduceat(ordered, starts)
    return Partial(keys, stats)


class StatsTable:
    """Partials merged in place: each key's row in one matrix, so adding a batch's
    partial is a few vectorized operations, not one merge per key."""

    __slots__ = ("index", "rows")

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.rows = np.empty((0, _WIDTH), dtype=np.float64)

    def add(self, part: Partial) -> StatsTable:
        index = self.index
        at = [index.setdefault(key, len(index)) for key in part.keys]
        if len(index) > len(self.rows):
            grown = np.empty((max(len(index), 2 * len(self.rows)), _WIDTH), dtype=np.float64)
            grown[: len(self.rows)] = self.rows
            grown[len(self.rows) :, :4] = 0.0
            grown[len(self.rows) :, 4:] = _NO_VERSION
            self.rows = grown
        table, rows = self.rows, part.rows
        table[at, :4] += rows[:, :4]
        table[at, 4] = np.minimum(table[at, 4], rows[:, 4])
        table[at, 5] = np.maximum(table[at, 5], rows[:, 5])
        return self

    def partial(self) -> Partial:
        """What it holds, as one partial (its rows, not a copy)."""
        return Partial(list(self.index), self.rows[: len(self.index)])

    def stats(self) -> Stats:
        return {key: self.rows[i].copy() for key, i in self.index.items()}


def stats_rows(
    stats: Stats,
    start_us: int | None,
    end_us: int | None,
    pane: str,
    pane_index: int = 0,
    is_last: bool = False,
) -> Iterator[dict[str, Any]]:
    """The output rows, one per key, of a window's merged stats."""
    for key, s in sorted(stats.items()):
        yield {
            "key": key,
            "window_start_us": start_us,
            "window_end_us": end_us,
            "pane": pane,
            "pane_index": pane_index,
            "is_last": is_last,
            "events": int(s[0]),
            "mean_score": float(s[1] / s[0]) if s[0] else None,
            "labelled": int(s[2]),
            "accuracy": float(s[3] / s[2]) if s[2] else None,
            "min_version": int(s[4]) if np.isfinite(s[4]) else None,
            "max_version": int(s[5]) if np.isfinite(s[5]) else None,
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
    def __init__(self) -> None:
        self._panes = beam.metrics.Metrics.counter(NAMESPACE, "windows_fired")

    def process(
        self,
        kv: tuple[str, Stats],
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        start = getattr(window, "start", None)
        end = getattr(window, "end", None)
        rows = list(
            stats_rows(
                kv[1],
                None if start is None else int(start.micros),
                None if end is None else int(end.micros),
                _TIMING.get(pane.timing, str(pane.timing)),
                int(pane.index),
                bool(pane.is_last),
            )
        )
        self._panes.inc(len(rows))
        yield from rows


def _for_all_keys(batch: pa.RecordBatch) -> tuple[str, Partial]:
    # A module function, not a lambda: the streaming DirectRunner pickles each step's
    # function for every bundle, a lambda by value (its code), a function by name.
    return _ALL, partial_stats(batch)


def _by_key(batch: pa.RecordBatch) -> Iterator[tuple[str, Partial]]:
    part = partial_stats(batch)
    for i, key in enumerate(part.keys):
        yield key, Partial([key], part.rows[i : i + 1])


class WindowStats(beam.PTransform):
    """Windowed (scored) batches in, one dict per (key, window, pane) out.

    Each batch is reduced to per-key partial sums first. With fixed, sliding or global
    windows the partials of a window are merged under one grouping key (one element per
    batch into the GroupByKey, not one per event or per key); merging windows
    (sessions) are grouped per key, as Beam merges them per key.
    """

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        if batches.windowing.windowfn.is_merging():
            partials = batches | "PartialStats" >> beam.FlatMap(_by_key)
        else:
            partials = batches | "PartialStats" >> beam.Map(_for_all_keys)
        return (
            partials
            | "MergePerWindow" >> beam.CombinePerKey(_MergeStats())
            | "FormatPane" >> beam.ParDo(_FormatPaneDoFn())
        )
