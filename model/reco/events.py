"""Interaction events (``timestamp``, ``user``, ``item``, optional ``rating``) as
micro-batches, every bad row set aside with its reason.

A micro-batch of interactions has the micro-batch columns (:mod:`model.batch`):
``key`` (the user), ``event_time``, ``event_id`` (the row's number in its input,
from 0), ``features`` (the rating, 0 where there is none: nothing reads it), plus
``user``, ``item`` (text) and ``rating`` (float64; NaN where the input has none:
implicit feedback, an event to predict, not to learn from; without a rating column
every event is a 1.0, "seen").

A row is dead-lettered (stage ``parse``) when its time cannot be read or is out of
range, its user or item is empty, or its rating is not a finite number. Rows keep
their input order; the watermark after a chunk trails the newest event time so far
by ``lag_s``.

>>> table = pa.table({"timestamp": ["2024-01-01 00:00:00", "bad", "2024-01-01 00:00:02"],
...                   "user": ["u1", "u2", "u3"], "item": ["a", "b", ""],
...                   "rating": ["4", "5", "3"]})
>>> [(c.batch.num_rows if c.batch else 0, [d.reason for d in c.dead])
...  for c in chunks(table, InteractionFormat())]
[(1, ['unreadable timestamp: bad', 'empty item'])]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from model import batch as mb
from model.streams.csv_parse import in_years, parse_times_us, parse_timestamp_us
from model.vocabulary import EVENT_ID, EVENT_TIME, FEATURES, KEY, DeadLetter, Stage

USER, ITEM, RATING = "user", "item", "rating"


@dataclass(frozen=True)
class InteractionFormat:
    """Which columns hold what, and how many rows a micro-batch takes."""

    time_column: str = "timestamp"
    user_column: str = USER
    item_column: str = ITEM
    rating_column: str | None = RATING
    chunk_rows: int = 4_096
    lag_s: float = 0.0

    def __post_init__(self) -> None:
        if self.chunk_rows < 1 or self.lag_s < 0:
            msg = f"need chunk_rows >= 1 and lag_s >= 0, got {self.chunk_rows!r}, {self.lag_s!r}"
            raise ValueError(msg)


@dataclass
class Chunk:
    """A micro-batch of good rows (or None), the source watermark after it, and the
    dead letters of its bad rows."""

    batch: pa.RecordBatch | None
    watermark_us: int
    dead: list[DeadLetter] = field(default_factory=list)


def read_csv(path: str, fmt: InteractionFormat) -> pa.Table:
    """The file's columns, every one as text (ids stay ids: ``007`` is not ``7``)."""
    names = pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 16)).schema.names
    missing = [
        c for c in (fmt.time_column, fmt.user_column, fmt.item_column, fmt.rating_column)
        if c is not None and c not in names
    ]  # fmt: skip
    if missing:
        msg = f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(names)})"
        raise ValueError(msg)
    convert = pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                    strings_can_be_null=False)  # fmt: skip
    return pa_csv.read_csv(path, convert_options=convert)


def chunks(table: pa.Table, fmt: InteractionFormat) -> Iterator[Chunk]:
    """``table`` (columns as text, or numbers) in micro-batches of ``fmt.chunk_rows``."""
    newest: int | None = None
    lag_us = round(fmt.lag_s * mb.US_PER_SECOND)
    for start in range(0, max(table.num_rows, 1), fmt.chunk_rows):
        part = table.slice(start, fmt.chunk_rows)
        if not part.num_rows:
            return
        batch, dead = _parse(part, fmt, start)
        if batch is not None:
            top = int(mb.event_times_us(batch).max())
            newest = top if newest is None else max(newest, top)
        watermark = mb.NO_WATERMARK if newest is None else newest - lag_us
        yield Chunk(batch, watermark, dead)


def _text(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name).combine_chunks()
    return column if pa.types.is_string(column.type) else pc.cast(column, pa.string())


Parsed = tuple[pa.RecordBatch | None, list[DeadLetter]]


def _parse(part: pa.Table, fmt: InteractionFormat, first: int) -> Parsed:
    n = part.num_rows
    times = _times(_text(part, fmt.time_column))
    users = _text(part, fmt.user_column)
    items = _text(part, fmt.item_column)
    reasons: dict[int, str] = {}  # bad row -> its first reason
    for row in np.flatnonzero(times == mb.NO_WATERMARK).tolist():
        reasons[row] = f"unreadable timestamp: {part.column(fmt.time_column)[row].as_py()}"
    for name, ids in (("user", users), ("item", items)):
        empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids)), 0)
        for row in np.flatnonzero(empty.to_numpy(zero_copy_only=False)).tolist():
            reasons.setdefault(row, f"empty {name}")
    ratings = np.ones(n)
    if fmt.rating_column is not None:
        ratings, bad = _ratings(_text(part, fmt.rating_column))
        for row, text in bad.items():
            reasons.setdefault(row, f"rating is not a finite number: {text}")
    dead = [
        DeadLetter(reason, Stage.PARSE, payload={"row": first + row})
        for row, reason in sorted(reasons.items())
    ]
    good = np.ones(n, bool)
    good[list(reasons)] = False
    if not good.any():
        return None, dead
    index = pa.array(np.flatnonzero(good))
    rating = ratings[good]
    batch = pa.RecordBatch.from_arrays(
        [
            pc.take(users, index),
            mb.times_array(times[good]),
            pa.array(first + np.flatnonzero(good), pa.int64()),
            pa.FixedSizeListArray.from_arrays(
                pa.array(np.nan_to_num(rating, nan=0.0).astype(np.float32)), 1
            ),
            pc.take(users, index),
            pc.take(items, index),
            pa.array(rating, pa.float64()),
        ],
        names=[KEY, EVENT_TIME, EVENT_ID, FEATURES, USER, ITEM, RATING],
    )
    return batch, dead


def _ratings(texts: pa.Array) -> tuple[np.ndarray, dict[int, str]]:
    """Each rating (NaN where the cell is empty: predict only) and the rows whose
    text is not a finite number."""
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(texts)), 0)
    try:  # the common case, at once
        values = pc.cast(pc.if_else(blank, pa.scalar(None, pa.string()), texts), pa.float64())
        out = values.to_numpy(zero_copy_only=False).astype(np.float64)
        bad_rows = np.flatnonzero(~np.isnan(out) & ~np.isfinite(out))
        bad_rows = np.union1d(bad_rows, _nan_texts(texts, out, blank))
        return out, {int(r): texts[int(r)].as_py() for r in bad_rows}
    except (pa.ArrowInvalid, ValueError):
        pass
    out, bad = np.full(len(texts), np.nan), {}
    for row, text in enumerate(texts.to_pylist()):
        if text is None or not text.strip():
            continue  # no rating: an event to predict, not to learn from
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            bad[row] = text
        out[row] = value
    return out, bad


def _nan_texts(texts: pa.Array, values: np.ndarray, blank: pa.Array) -> np.ndarray:
    """Rows whose text parsed to NaN ("nan"): a rating that is not a number."""
    nan = np.isnan(values) & ~blank.to_numpy(zero_copy_only=False)
    return np.flatnonzero(nan)


def _times(texts: pa.Array) -> np.ndarray:
    """Microseconds per row; :data:`model.batch.NO_WATERMARK` where unreadable."""
    fast = parse_times_us(texts)
    if fast is not None:
        return fast
    out = np.full(len(texts), mb.NO_WATERMARK, np.int64)
    for row, text in enumerate(texts.to_pylist()):
        try:
            value = parse_timestamp_us(text or "")
        except ValueError:
            continue
        if in_years(np.array([value])):
            out[row] = value
    return out
