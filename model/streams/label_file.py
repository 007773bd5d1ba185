"""A labels file: the labels of a stream's events, each with the time it became known.

CSV with a header and, by name, the event's ``event_id``, its event time (the events'
time column), the label (the label column), ``label_time`` (when the label became
known: ISO 8601 or epoch seconds, as event times) and, when the events have one, the
``key`` column (otherwise every label is for the events' one key). Every row becomes
a row of a label-only batch (:func:`model.batch.label_batch`, with ``label_time``) or
a dead letter (stage ``labels``) with its reason: a label that is not a class, a
label known before its event, a field that does not parse. Pure Python and Arrow:
usable without a pipeline.

>>> fmt = LabelFormat("y", default_key="k")
>>> lines = ["event_id,timestamp,y,label_time", "7,2024-01-01,1,2024-01-03",
...          "8,2024-01-02,1,2024-01-01", "9,2024-01-02,x,2024-01-05"]
>>> (chunk,) = parse_label_lines(lines, fmt, "labels.csv")
>>> chunk.batch.column("event_id").to_pylist()
[7]
>>> for record in chunk.dead:
...     print(record.payload["line"], record.reason)
3 label known before its event (label_time 2024-01-01 < 2024-01-02)
4 non-integer value 'x' in column 'y'

"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from model import batch as mb
from model.streams.csv_parse import ParsedChunk, check_class, int_value, parse_timestamp_us
from model.vocabulary import EVENT_ID, KEY, LABEL_TIME, DeadLetter, Stage


@dataclass(frozen=True)
class LabelFormat:
    """How to read a labels file: its column names, the key of labels without a key
    column (the events' key), and the classes a label may be."""

    label_column: str
    time_column: str = "timestamp"
    label_time_column: str = LABEL_TIME
    event_id_column: str = EVENT_ID
    key_column: str = KEY
    default_key: str | None = None
    num_classes: int | None = None
    chunk_rows: int = 4_096


@dataclass(frozen=True)
class _Columns:
    event_id: int
    time: int
    label: int
    label_time: int
    key: int | None
    width: int


def _columns(header: list[str], fmt: LabelFormat, source: str) -> _Columns:
    names = [h.strip() for h in header]
    index = {n: i for i, n in enumerate(names)}
    needed = (fmt.event_id_column, fmt.time_column, fmt.label_column, fmt.label_time_column)
    missing = [n for n in needed if n not in index]
    if missing:
        msg = f"{source}: a labels file needs the columns {list(needed)}; {missing} not in {names}"
        raise ValueError(msg)
    key = index.get(fmt.key_column)
    if key is None and fmt.default_key is None:
        msg = (
            f"{source}: no {fmt.key_column!r} column, and the events have several keys: "
            "say which key each label is for"
        )
        raise ValueError(msg)
    event_id, time, label, label_time = (index[n] for n in needed)
    return _Columns(event_id, time, label, label_time, key=key, width=len(names))


def parse_label_lines(lines: Iterable[str], fmt: LabelFormat, source: str) -> Iterator[ParsedChunk]:
    """A labels file's text lines (header first) as label-only batches of at most
    ``fmt.chunk_rows`` rows, and the dead letters of its bad rows (payload: the
    ``source``, the ``line`` number and the ``raw`` text). A header without the
    columns needed raises ``ValueError``."""
    it = iter(lines)
    header = next(it, None)
    if header is None:
        msg = f"{source}: empty labels file (no header)"
        raise ValueError(msg)
    cols = _columns(next(csv.reader([header])), fmt, source)
    line_no = 1
    while chunk := list(itertools.islice(it, fmt.chunk_rows)):
        first, line_no = line_no + 1, line_no + len(chunk)
        yield _parse_rows(chunk, first, cols, fmt, source)


def _parse_rows(
    lines: list[str], first_line_no: int, cols: _Columns, fmt: LabelFormat, source: str
) -> ParsedChunk:
    keys: list[str] = []
    rows: list[tuple[int, int, int, int]] = []  # event_id, event time, label, label time
    dead: list[DeadLetter] = []
    for line_no, line in enumerate(lines, start=first_line_no):
        try:
            row = next(csv.reader([line]), [])
            if len(row) != cols.width:
                msg = f"wrong number of columns: expected {cols.width}, got {len(row)}"
                raise ValueError(msg)
            event_id = int_value(row[cols.event_id], fmt.event_id_column)
            t_us = parse_timestamp_us(row[cols.time])
            raw_label = row[cols.label]
            label = int_value(raw_label, fmt.label_column)
            check_class(label, raw_label.strip(), f"column {fmt.label_column!r}", fmt.num_classes)
            known_us = parse_timestamp_us(row[cols.label_time])
            if known_us < t_us:
                known, at = row[cols.label_time].strip(), row[cols.time].strip()
                raise ValueError(f"label known before its event (label_time {known} < {at})")
            key = row[cols.key].strip() if cols.key is not None else fmt.default_key
            if not key:
                raise ValueError("empty key")
        except (ValueError, csv.Error) as err:
            payload = {"source": source, "line": line_no, "raw": line.rstrip("\r\n")}
            dead.append(DeadLetter(str(err), Stage.LABELS, rows=1, payload=payload))
        else:
            keys.append(key)
            rows.append((event_id, t_us, label, known_us))
    if not rows:
        return ParsedChunk(None, dead)
    event_ids, times, labels, known = np.array(rows, dtype=np.int64).T.copy()
    batch = mb.make_batch(keys, times, np.zeros((len(rows), 1)), labels=labels, event_ids=event_ids)
    batch = batch.append_column(pa.field(LABEL_TIME, mb.EVENT_TIME_TYPE), mb.times_array(known))
    return ParsedChunk(mb.label_batch(batch), dead)  # (no features: a placeholder column)
