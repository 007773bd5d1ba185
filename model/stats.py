"""Per key and window statistics of scored rows, as a few array operations per batch.

A batch reduces to a :class:`Partial` (its keys, and per key the events, the sum of
scores, the labelled and correctly predicted events, the lowest and highest model
version); partials of one window add up in a :class:`StatsTable`; :func:`stats_rows`
turns a window's totals into the rows the sinks write (one Arrow batch). Pure numpy
and Arrow, shared by the windowed aggregation (:mod:`transforms.window.stats`) and
the online step.

>>> import numpy as np
>>> part = stats_of(np.array([0, 1, 1]), ["a", "b"], score=np.array([0.5, 1.0, 0.0]),
...                 correct=np.array([True, True, False]), versions=3)
>>> row = stats_rows(StatsTable().add(part).stats(), 0, 10, Pane.ON_TIME).to_pylist()[0]
>>> row["key"], row["events"], row["accuracy"], row["max_version"]
('a', 1, 1.0, 3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from model import batch as mb
from model import vocabulary as v
from model.vocabulary import Pane

# events, sum of scores, labelled events, correct predictions, min and max version
_WIDTH = 6
_NO_VERSION = (np.inf, -np.inf)
Stats = dict[Any, np.ndarray]  # by key, or by (window start, key): see by_window


@dataclass(frozen=True)
class Partial:
    """One batch's stats: the keys, and one row per key
    ``[events, sum_score, labelled, correct, min_version, max_version]``. Never
    changed once made, so a copy is the object itself: Beam's reference streaming
    runner deep-copies the grouping state (every buffered partial) for each bundle."""

    keys: list[Any]  # event keys, or (window start, key) pairs (see by_window)
    rows: np.ndarray

    def __deepcopy__(self, memo: dict[int, Any]) -> Partial:
        return self

    def as_stats(self) -> Stats:
        """``{key: row}``."""
        return dict(zip(self.keys, self.rows, strict=True))


def partial_stats(batch: pa.RecordBatch, window_us: int = 0, offset_us: int = 0) -> Partial:
    """The per-key stats of a batch. Batches without ``score``/``prediction``/
    ``model_version`` columns (unscored) count events only. With ``window_us``, per
    window (of that size) and key: the batch spans several (:func:`by_window`)."""
    names = batch.schema.names

    def column(name: str) -> np.ndarray | None:
        return batch.column(name).to_numpy(zero_copy_only=False) if name in names else None

    prediction = column(v.PREDICTION)
    labels = None if prediction is None else mb.labels_numpy(batch)
    codes, keys = mb.key_codes(batch)
    if window_us:
        codes, keys = by_window(codes, keys, mb.event_times_us(batch), window_us, offset_us)
    return stats_of(
        codes,
        keys,
        score=column(v.SCORE),
        correct=None if labels is None or prediction is None else labels == prediction,
        versions=column(v.MODEL_VERSION),
    )


def stats_of(
    codes: np.ndarray,
    keys: list[Any],
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


def by_window(
    codes: np.ndarray, keys: list[str], times_us: np.ndarray, window_us: int, offset_us: int = 0
) -> tuple[np.ndarray, list[Any]]:
    """Key codes made codes of ``(window start, key)``, for rows of several windows
    (a frame's, see ``transforms.window.spec.FramedWindows``): pass them to
    :func:`stats_of` for one stats row per window and key, in one vectorized pass.

    >>> by_window(np.array([0, 1, 0]), ["a", "b"], np.array([1, 2, 12]), 10)
    (array([0, 1, 2]), [(0, 'a'), (0, 'b'), (10, 'a')])
    """
    starts = mb.window_start_us(times_us, window_us, offset_us)
    k = len(keys)
    pairs = starts * k + codes  # one number per (start, key): codes are < k
    present, compact = np.unique(pairs, return_inverse=True)
    windowed = [(int(p // k), keys[p % k]) for p in present.tolist()]
    return compact, windowed


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


_INT, _FLOAT, _TEXT = pa.int64(), pa.float64(), pa.string()
# the rows the sinks write: v.STATS_FIELDS, typed
_TYPES = dict(
    zip(
        v.STATS_FIELDS,
        (_TEXT, _INT, _INT, _TEXT, _INT, pa.bool_(), _INT, _FLOAT, _INT, _FLOAT, _INT, _INT),
        strict=True,
    )
)
# in name order: the JSON lines of windows/ keep their keys sorted, as they always had
STATS_SCHEMA = pa.schema(sorted(_TYPES.items()))


def window_stats_rows(
    stats: Stats, window_us: int, pane: Pane, pane_index: int = 0, is_last: bool = False
) -> pa.RecordBatch:
    """:func:`stats_rows` for stats keyed by ``(window start, key)`` (:func:`by_window`):
    one row per window and key, in window order."""
    order = sorted(stats)
    starts = np.array([start for start, _ in order], dtype=np.int64)
    return _rows(
        [key for _, key in order], [stats[k] for k in order], starts, starts + window_us,
        pane, pane_index, is_last,
    )  # fmt: skip


def stats_rows(
    stats: Stats,
    start_us: int | None,
    end_us: int | None,
    pane: Pane,
    pane_index: int = 0,
    is_last: bool = False,
) -> pa.RecordBatch:
    """The output rows (:data:`STATS_SCHEMA`), one per key, of a window's merged stats."""
    keys = sorted(stats)
    n = len(keys)
    return _rows(
        keys, [stats[k] for k in keys], [start_us] * n, [end_us] * n, pane, pane_index, is_last
    )


def _rows(
    keys: list[Any],
    stats: list[np.ndarray],
    starts: Any,
    ends: Any,
    pane: Pane,
    pane_index: int,
    is_last: bool,
) -> pa.RecordBatch:
    """Output rows from stats rows, column by column (a sparse stream has a row per
    event): one batch however many windows and keys."""
    m = np.stack(stats) if stats else np.zeros((0, _WIDTH))
    events, labelled = m[:, 0], m[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean, accuracy = m[:, 1] / events, m[:, 3] / labelled
    n = len(keys)
    columns = [
        pa.array([str(k) for k in keys], pa.string()),
        pa.array(starts, pa.int64()),
        pa.array(ends, pa.int64()),
        pa.repeat(pa.scalar(str(pane)), n),
        pa.repeat(pa.scalar(pane_index, pa.int64()), n),
        pa.repeat(pa.scalar(is_last), n),
        pa.array(events.astype(np.int64)),
        pa.array(mean, mask=events <= 0),
        pa.array(labelled.astype(np.int64)),
        pa.array(accuracy, mask=labelled <= 0),
        _versions(m[:, 4]),
        _versions(m[:, 5]),
    ]  # fmt: skip
    named = dict(zip(v.STATS_FIELDS, columns, strict=True))
    return pa.RecordBatch.from_arrays([named[n] for n in STATS_SCHEMA.names], schema=STATS_SCHEMA)


def _versions(values: np.ndarray) -> pa.Array:
    """Model versions (the stats' floats; none: not finite) as nullable integers."""
    known = np.isfinite(values)
    return pa.array(np.where(known, values, 0).astype(np.int64), mask=~known)
