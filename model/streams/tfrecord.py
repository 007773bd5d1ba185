"""TFRecord files of ``tf.train.Example`` records to micro-batches, through tfx-bsl.

A TFRecord file is a sequence of records, each framed as: its length (uint64, little
endian), the masked CRC32-C of the length, the bytes, the masked CRC32-C of the
bytes. :func:`read_records` checks both CRCs; :func:`write_records` writes them.
Records are decoded a chunk at a time by tfx-bsl's ``ExamplesToRecordBatchDecoder``
(serialized ``tf.Example`` -> Arrow, in C++), then turned into our micro-batches:

- the time feature (``fmt.time_column``): epoch seconds (int64 or float) or an ISO
  8601 string (bytes), as in CSV files;
- ``key`` (bytes, optional; default the file's name), ``event_id`` (int64, optional;
  default the record's position), the label (``fmt.label_column``, int64);
- every other feature is a numeric feature, one value per example; the feature names
  are those of the file's first chunk, in sorted order.

An example that cannot be used (no time, a bad label, a feature missing or with
several values, a record whose CRC does not match) becomes a dead letter with its
reason; nothing is dropped silently.

>>> import os, tempfile
>>> from tfx_bsl.coders import example_coder
>>> ints, floats = pa.list_(pa.int64()), pa.list_(pa.float32())
>>> rows = pa.record_batch({"timestamp": pa.array([[0], [60]], ints),
...                         "x": pa.array([[1.5], [2.5]], floats), "y": pa.array([[0], [1]], ints)})
>>> path = os.path.join(tempfile.mkdtemp(), "two.tfrecord")
>>> write_records(path, example_coder.RecordBatchToExamplesEncoder().encode(rows))
>>> [c.batch.num_rows for c in parse_tfrecord(path, CsvFormat(label_column="y"))]
[2]
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Iterator
from typing import IO, Any

import pyarrow as pa

from model import batch as mb
from model.streams.csv_parse import (
    CsvFormat,
    ParsedChunk,
    RowBuilder,
    _float,
    _label,
    _usable,
    parse_timestamp_us,
)
from model.vocabulary import DeadLetter, Stage

_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")


def _masked_crc(data: bytes) -> int:
    import google_crc32c

    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_records(path: str, records: Iterable[bytes]) -> None:
    """Write ``records`` as a TFRecord file."""
    with open(path, "wb") as f:
        for data in records:
            length = _LENGTH.pack(len(data))
            f.write(length + _CRC.pack(_masked_crc(length)) + data)
            f.write(_CRC.pack(_masked_crc(data)))


def read_records(stream: IO[bytes]) -> Iterator[bytes | ValueError]:
    """The records of a TFRecord stream; a record that fails its CRC is a
    ``ValueError`` in its place (a broken frame ends the file: nothing after it can
    be found)."""
    while True:
        head = stream.read(_LENGTH.size + _CRC.size)
        if not head:
            return
        if len(head) < _LENGTH.size + _CRC.size:
            yield ValueError("truncated record header at the end of the file")
            return
        length_bytes = head[: _LENGTH.size]
        if _CRC.unpack(head[_LENGTH.size :])[0] != _masked_crc(length_bytes):
            yield ValueError("corrupt record length (CRC mismatch): the rest is unreadable")
            return
        (length,) = _LENGTH.unpack(length_bytes)
        data = stream.read(length)
        tail = stream.read(_CRC.size)
        if len(data) < length or len(tail) < _CRC.size:
            yield ValueError("truncated record at the end of the file")
            return
        if _CRC.unpack(tail)[0] != _masked_crc(data):
            yield ValueError("corrupt record (CRC mismatch)")
            continue
        yield data


def _one(values: Any, name: str) -> Any:
    if values is None or len(values) == 0:
        msg = f"feature {name!r} is missing"
        raise ValueError(msg)
    if len(values) != 1:
        msg = f"feature {name!r} has {len(values)} values, expected 1"
        raise ValueError(msg)
    return values[0]


def _feature(values: Any, name: str) -> float:
    value = _one(values, name)
    if isinstance(value, bytes):  # a bytes feature: read as text, as a CSV cell is
        return _float(value.decode("utf-8", errors="replace"), name)
    return _usable(float(value), value, name)


def _time_us(value: Any, name: str) -> int:
    if isinstance(value, bytes):
        return parse_timestamp_us(value.decode("utf-8", errors="replace"))
    if isinstance(value, float) and not math.isfinite(value):
        msg = f"non-finite timestamp {value!r} in feature {name!r}"
        raise ValueError(msg)
    return parse_timestamp_us(repr(value))


class _Decoder:
    """Decodes chunks of serialized examples of one file (its feature names fixed
    by the first chunk)."""

    def __init__(self, fmt: CsvFormat, source: str) -> None:
        from tfx_bsl.coders import example_coder

        self.fmt = fmt
        self.source = source
        self.decoder = example_coder.ExamplesToRecordBatchDecoder()
        self.features: list[str] | None = None
        self.default_key = os.path.basename(source)

    def _decode(
        self, records: list[bytes | ValueError]
    ) -> tuple[list[bytes | ValueError], pa.RecordBatch | None]:
        """The records (each one tfx-bsl cannot parse as a ``tf.Example`` replaced by
        an error) and the good ones decoded, in one call when the whole chunk parses
        (the decoder refuses a whole chunk for one bad record: then the records are
        tried one by one)."""
        good = [r for r in records if isinstance(r, bytes)]
        if not good:
            return records, None
        try:
            return records, self.decoder.DecodeBatch(good)
        except RuntimeError:
            pass
        out: list[bytes | ValueError] = []
        for r in records:
            if isinstance(r, bytes):
                try:
                    self.decoder.DecodeBatch([r])
                except RuntimeError as err:
                    r = ValueError(f"not a tf.Example: {err}")
            out.append(r)
        good = [r for r in out if isinstance(r, bytes)]
        return out, self.decoder.DecodeBatch(good) if good else None

    def special(self) -> set[str]:
        fmt = self.fmt
        return {fmt.time_column, fmt.key_column, fmt.event_id_column, fmt.label_column or ""}

    def chunk(self, records: list[bytes | ValueError], first_index: int) -> ParsedChunk:
        records, decoded = self._decode(records)
        # each column converted once per chunk, not value by value
        columns = (
            {}
            if decoded is None
            else {n: decoded.column(n).to_pylist() for n in decoded.schema.names}
        )
        if self.features is None and decoded is not None:
            self.features = sorted(set(columns) - self.special())
            if not self.features:
                msg = f"{self.source}: no feature besides {sorted(self.special() - {''})}"
                raise ValueError(msg)
        with_label = self.fmt.label_column is not None
        builder, dead = RowBuilder(with_label), []
        row = -1
        for index, record in enumerate(records, start=first_index):
            payload = {"source": self.source, "record": index}
            if isinstance(record, ValueError):
                dead.append(DeadLetter(str(record), Stage.PARSE, rows=1, payload=payload))
                continue
            row += 1
            try:
                values = {n: col[row] for n, col in columns.items()}
                t_us = _time_us(_one(values.get(self.fmt.time_column), "time"), "time")
                feats = [_feature(values.get(n), n) for n in self.features or ()]
                key_value = values.get(self.fmt.key_column)
                key = _one(key_value, "key").decode() if key_value else self.default_key
                ids = values.get(self.fmt.event_id_column)
                event_id = int(_one(ids, "event_id")) if ids else index
                label = None
                if with_label:
                    assert self.fmt.label_column is not None
                    raw = _one(values.get(self.fmt.label_column), self.fmt.label_column)
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    label = _label(text, self.fmt.label_column, self.fmt.num_classes)
            except (ValueError, TypeError, UnicodeDecodeError) as err:
                dead.append(DeadLetter(str(err), Stage.PARSE, rows=1, payload=payload))
                continue
            builder.add(key, t_us, feats, event_id, label)
        return ParsedChunk(builder.build(), dead)


def parse_records(
    records: Iterable[bytes | ValueError], fmt: CsvFormat, source: str
) -> Iterator[ParsedChunk]:
    """Chunks of at most ``fmt.chunk_rows`` records as micro-batches and dead letters."""
    decoder = _Decoder(fmt, source)
    pending: list[bytes | ValueError] = []
    first = 0
    for record in records:
        pending.append(record)
        if len(pending) >= fmt.chunk_rows:
            yield decoder.chunk(pending, first)
            first += len(pending)
            pending = []
    if pending:
        yield decoder.chunk(pending, first)


def parse_tfrecord(path: str, fmt: CsvFormat) -> Iterator[ParsedChunk]:
    """The micro-batches and dead letters of a local TFRecord file."""
    with open(path, "rb") as f:
        yield from parse_records(read_records(f), fmt, path)


def num_features(path: str, fmt: CsvFormat) -> int:
    """The number of features of a TFRecord file's examples; ``ValueError`` if it
    has none that can be read."""
    for chunk in parse_tfrecord(path, fmt):
        if chunk.batch is not None:
            return mb.num_features(chunk.batch)
        break
    msg = f"{path}: no readable example among its first records"
    raise ValueError(msg)


def head_batches(path: str, fmt: CsvFormat, rows: int = 2_048) -> list[pa.RecordBatch]:
    """The good examples among the first ``rows`` records (for the time scale)."""
    out: list[pa.RecordBatch] = []
    seen = 0
    for chunk in parse_tfrecord(path, fmt):
        if chunk.batch is not None:
            out.append(chunk.batch)
        seen += (chunk.batch.num_rows if chunk.batch is not None else 0) + len(chunk.dead)
        if seen >= rows:
            break
    return out


__all__ = [
    "head_batches",
    "num_features",
    "parse_records",
    "parse_tfrecord",
    "read_records",
    "write_records",
]
