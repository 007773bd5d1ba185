"""Event records as a message queue carries them (one JSON object a record) to
micro-batches, every bad record set aside with its reason, partition and offset.

A record is a JSON object: a time field (``timestamp`` by default: ISO 8601, naive
meaning UTC, or epoch seconds), optional ``key`` and ``event_id`` fields, an optional
integer label, and the numeric features, named in :class:`RecordFormat` (their order
is the feature vector's). A record without ``event_id`` gets one from where it was read
(``partition * 2^40 + offset``: unique, and the same on every re-read), so exactly-once
checks and label joins work on any topic. Pure Python, pyarrow and numpy: no Beam, no
Kafka client.

Records are decoded many at a time (Arrow's JSON reader on the whole poll); a poll with
a bad record is decoded record by record instead, so the others pass and the bad one
gets its reason.

>>> fmt = RecordFormat(features=("x", "y"), label_column="label")
>>> values = [encode_record({"timestamp": "2024-01-01 00:00:0%d" % i, "x": i, "y": 1.5,
...                          "label": i % 2}) for i in range(3)] + [b"{oops"]
>>> chunk = decode_records(values, partition=0, offsets=range(10, 14), fmt=fmt, source="t")
>>> chunk.batch.num_rows, chunk.batch.column("event_id").to_pylist()
(3, [10, 11, 12])
>>> [(d["offset"], d.reason[:12]) for d in chunk.dead]
[(13, 'not a JSON o')]
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from model import batch as mb
from model.streams.csv_parse import (
    ParsedChunk,
    RowBuilder,
    _usable,
    check_class,
    epoch_seconds_us,
    in_years,
    known_classes,
    parse_times_us,
    parse_timestamp_us,
    usable_features,
)
from model.vocabulary import EVENT_ID, KEY, DeadLetter, Stage

OFFSET_BITS = 40  # event ids of records without one: partition << 40 | offset


@dataclass(frozen=True)
class RecordFormat:
    """Which fields of a record are what; ``features`` in the order the model sees them."""

    features: tuple[str, ...]
    time_field: str = "timestamp"
    key_field: str = KEY
    event_id_field: str = EVENT_ID
    label_column: str | None = None
    num_classes: int | None = None  # labels outside [0, num_classes) are set aside
    default_key: str = ""

    def __post_init__(self) -> None:
        if not self.features:
            msg = "a record format needs at least one feature field"
            raise ValueError(msg)
        special = {self.time_field, self.key_field, self.event_id_field, self.label_column}
        clash = sorted(n for n in special & set(self.features) if n is not None)
        if clash:
            msg = f"feature fields {clash!r} are also the time, key, event_id or label field"
            raise ValueError(msg)


def encode_record(fields: dict[str, Any]) -> bytes:
    """A record's bytes (compact JSON, UTF-8)."""
    return json.dumps(fields, separators=(",", ":")).encode()


def decode_records(
    values: Sequence[bytes],
    *,
    partition: int,
    offsets: Sequence[int] | np.ndarray,
    fmt: RecordFormat,
    source: str,
) -> ParsedChunk:
    """Records read at ``offsets`` of ``partition``: the good ones as a micro-batch,
    the others as dead letters (stage ``parse``) naming ``source``, the partition, the
    offset and the raw record."""
    offsets = np.asarray(offsets, dtype=np.int64)
    if len(offsets) != len(values):
        msg = f"{len(values)} records but {len(offsets)} offsets"
        raise ValueError(msg)
    try:
        whole = _by_columns(values, offsets, partition, fmt)
    except (ValueError, TypeError, NotImplementedError, KeyError):
        # Arrow's errors among them (ArrowInvalid: a value of another type, or a
        # missing feature: a null), record by record: each bad one gets its reason
        whole = None
    if whole is not None:
        return ParsedChunk(whole)
    return _by_records(values, offsets, partition, fmt, source)


def _default_ids(partition: int, offsets: np.ndarray) -> np.ndarray:
    return (np.int64(partition) << OFFSET_BITS) | offsets


def _by_columns(
    values: Sequence[bytes], offsets: np.ndarray, partition: int, fmt: RecordFormat
) -> pa.RecordBatch | None:
    """All records at once (Arrow's JSON reader), or None when any would be set aside."""
    # records joined by newlines must stay one a line; and every one an object (Arrow
    # 25's JSON reader crashes the process on a record that is a bare null)
    if not values or any(v.lstrip()[:1] != b"{" or b"\n" in v or b"\r" in v for v in values):
        return None
    fields = [pa.field(name, pa.float64()) for name in fmt.features]
    if fmt.label_column is not None:
        fields.append(pa.field(fmt.label_column, pa.int64()))
    options = pj.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="infer")
    table = pj.read_json(io.BytesIO(b"\n".join(values)), parse_options=options)
    if table.num_rows != len(values) or fmt.time_field not in table.column_names:
        return None
    table = table.combine_chunks()
    feats = np.column_stack([table.column(n).to_numpy() for n in fmt.features])
    if not usable_features(feats):
        return None
    times = _record_times_us(table.column(fmt.time_field))
    if times is None:
        return None
    labels = None
    if fmt.label_column is not None:
        column = table.column(fmt.label_column)
        if column.null_count:
            return None
        labels = column.to_numpy()
        if not known_classes(labels, fmt.num_classes):
            return None
    keys: pa.Array = pa.repeat(fmt.default_key, len(values)).cast(pa.string())
    if fmt.key_field in table.column_names:
        keys = table.column(fmt.key_field).chunk(0)  # one chunk: combined above
        if keys.type != pa.string() or keys.null_count or pc.any(pc.equal(keys, "")).as_py():
            return None
    ids = _default_ids(partition, offsets)
    if fmt.event_id_field in table.column_names:
        column = table.column(fmt.event_id_field)
        if column.type != pa.int64() or column.null_count:
            return None
        ids = column.to_numpy()
    return mb.make_batch(keys, times, feats, labels=labels, event_ids=ids)


def _record_times_us(column: pa.ChunkedArray) -> np.ndarray | None:
    if column.null_count:
        return None
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if pa.types.is_string(array.type):
        return parse_times_us(array)
    if pa.types.is_integer(array.type) or pa.types.is_floating(array.type):
        return epoch_seconds_us(array.to_numpy())  # epoch seconds, as the CSV reads them
    if pa.types.is_timestamp(array.type) and array.type.tz is None:
        # Arrow's reader takes "YYYY-MM-DD HH:MM:SS" (whole seconds) as a timestamp:
        # naive, so UTC, as the record-by-record path reads it
        whole_us = array.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
        return whole_us if in_years(whole_us) else None
    return None


def _by_records(
    values: Sequence[bytes], offsets: np.ndarray, partition: int, fmt: RecordFormat, source: str
) -> ParsedChunk:
    builder = RowBuilder(fmt.label_column is not None)
    dead: list[DeadLetter] = []
    defaults = _default_ids(partition, offsets)
    for value, offset, default_id in zip(values, offsets.tolist(), defaults.tolist(), strict=True):
        try:
            row = _record(value, fmt, default_id)
        except ValueError as err:
            raw = value[:500].decode("utf-8", errors="replace")
            payload = {"source": source, "partition": partition, "offset": offset, "raw": raw}
            dead.append(DeadLetter(str(err), Stage.PARSE, rows=1, payload=payload))
            continue
        builder.add(*row)
    return ParsedChunk(builder.build(), dead)


def _record(
    value: bytes, fmt: RecordFormat, default_id: int
) -> tuple[str, int, list[float], int, int | None]:
    """A record's key, time, features, event id and label (None: no label field)."""
    try:
        row = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        row = None
    if not isinstance(row, dict):
        raise ValueError("not a JSON object")
    if fmt.time_field not in row:
        raise ValueError(f"no {fmt.time_field!r} field")
    t_us = parse_timestamp_us(str(row[fmt.time_field]))
    feats = [_number(row, name) for name in fmt.features]
    key = row.get(fmt.key_field, fmt.default_key)
    if not isinstance(key, str) or (fmt.key_field in row and not key):
        raise ValueError(f"key {key!r} is not a non-empty string")
    event_id = row.get(fmt.event_id_field, default_id)
    if not isinstance(event_id, int) or isinstance(event_id, bool):
        raise ValueError(f"event_id {event_id!r} is not an integer")
    label = None
    if fmt.label_column is not None:
        given: Any = row.get(fmt.label_column)
        if isinstance(given, float) and given.is_integer():
            given = int(given)  # 1.0 is a class, as in a CSV file
        where = f"field {fmt.label_column!r}"
        label = given if isinstance(given, int) and not isinstance(given, bool) else -1
        label = check_class(label, given, where, fmt.num_classes)
    return key, t_us, feats, event_id, label


def _number(row: dict[str, Any], name: str) -> float:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"field {name!r} is not a number: {value!r}")
    return _usable(float(value), value, name, kind="field")


def infer_format(
    values: Sequence[bytes], *, time_field: str = "timestamp", label_column: str | None = None
) -> RecordFormat:
    """The format of a topic whose first records are ``values``: every numeric field of
    the first record that is a JSON object (but the time, key, event id and label),
    in that record's order; ``ValueError`` when none is."""
    special = {time_field, KEY, EVENT_ID, label_column}
    for value in values:
        try:
            row = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(row, dict):
            features = tuple(
                name
                for name, v in row.items()
                if name not in special and isinstance(v, int | float) and not isinstance(v, bool)
            )
            return RecordFormat(features, time_field=time_field, label_column=label_column)
    msg = f"none of the first {len(values)} records is a JSON object"
    raise ValueError(msg)
