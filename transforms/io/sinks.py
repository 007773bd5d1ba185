"""File sinks: micro-batches to Parquet and JSONL, records (dicts) to JSONL.

Each bundle's rows go to one file per format, written to a temporary name and renamed
into place when the bundle finishes. The file name is a hash of the bundle's content,
so a bundle that the runner retries overwrites its own file instead of adding a
second copy (rows are expected to be distinct, e.g. by ``event_id``). A bundle that
a runner replays after a restore, with other boundaries than before, repeats rows in
another file: at least once, and readers keep one row per ``key`` and ``event_id``
(``read_parquet_dir(distinct_on=...)``). Any path that Beam's ``FileSystems``
understands works.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from model import batch as mb
from model.vocabulary import NAMESPACE, DeadLetter
from transforms.io.model_store import ensure_dir

FORMATS = ("parquet", "jsonl")
_JSON_SLICE_ROWS = 65_536


def _jsonable(value: Any) -> Any:
    """As the vectorized path writes it: UTC timestamps (zone-less ones are UTC),
    ``null`` for NaN and infinities (not JSON)."""
    if isinstance(value, dt.datetime):
        utc = value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _rows_one_by_one(batch: pa.RecordBatch) -> list[str]:
    """The general (slow) path: one ``json.dumps`` per row."""
    columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    return [
        json.dumps(
            {name: _jsonable(values[i]) for name, values in columns.items()}, allow_nan=False
        )
        for i in range(batch.num_rows)
    ]


def _null_as(values: pa.Array, encoded: pa.Array) -> pa.Array:
    if values.null_count == 0:
        return encoded
    return pc.if_else(pc.is_valid(values), encoded, pa.scalar("null"))


def _json_values(column: pa.Array) -> pa.Array | None:
    """Each value of ``column`` as JSON text (a string array), or None for a type
    without a vectorized encoding."""
    t = column.type
    if pa.types.is_dictionary(t):  # each dictionary value encoded once
        values = _json_values(column.dictionary)
        return None if values is None else _null_as(column, values.take(column.indices))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        # Escape each distinct value once (keys repeat), then spread them back.
        encoded = column.dictionary_encode()
        texts = pa.array([json.dumps(v) for v in encoded.dictionary.to_pylist()], pa.string())
        return _null_as(column, texts.take(encoded.indices))
    if pa.types.is_boolean(t):
        return _null_as(column, pc.if_else(column, pa.scalar("true"), pa.scalar("false")))
    if pa.types.is_integer(t):
        return _null_as(column, pc.cast(column, pa.string()))
    if pa.types.is_floating(t):
        text = pc.cast(pc.cast(column, pa.float64()), pa.string())  # shortest round trip
        whole = pc.match_substring_regex(text, r"^-?[0-9]+$")
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
        finite = pc.is_finite(column)  # NaN and infinities are not JSON
        return pc.if_else(pc.fill_null(finite, False), text, pa.scalar("null"))
    if pa.types.is_timestamp(t) and t.tz is not None and t.unit == "us":
        # Arrow's cast writes "YYYY-MM-DD HH:MM:SS.ffffff" (UTC values once the zone is
        # dropped); much faster than strftime.
        text = pc.cast(column.cast(pa.timestamp(t.unit)), pa.string())
        iso = pc.replace_substring(text, " ", "T", max_replacements=1)
        return _null_as(column, pc.binary_join_element_wise('"', iso, 'Z"', ""))
    if pa.types.is_fixed_size_list(t) and column.null_count == 0 and t.list_size > 0:
        items = _json_values(column.flatten())
        if items is None:
            return None
        offsets = pa.array(range(0, len(items) + 1, t.list_size), pa.int32())
        joined = pc.binary_join(pa.ListArray.from_arrays(offsets, items), ", ")
        return pc.binary_join_element_wise("[", joined, "]", "")
    return None


def batch_to_json_lines(batch: pa.RecordBatch) -> bytes:
    """One JSON object per row; timestamps as ISO 8601 UTC strings.

    Column by column with Arrow compute (one vectorized pass per column instead of a
    ``json.dumps`` per row); a batch with a column type that has no vectorized
    encoding takes the row-by-row path.
    """
    if batch.num_rows == 0:
        return b""
    parts: list[Any] = []  # '{"name": ', value, ', "name": ', value, ..., '}\n': one join
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        values = _json_values(column)
        if values is None:
            lines = _rows_one_by_one(batch)
            return ("\n".join(lines) + "\n").encode()
        parts += [pa.scalar((", " if parts else "{") + json.dumps(name) + ": "), values]
    lines = pc.binary_join_element_wise(*parts, pa.scalar("}\n"), "")
    # The lines are contiguous in the array's data buffer: take its bytes as they are.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
    first, last = offsets[lines.offset], offsets[lines.offset + len(lines)]
    return lines.buffers()[2][first:last].to_pybytes()


def _write_atomically(directory: str, name: str, data: bytes) -> None:
    final = FileSystems.join(directory, name)
    tmp = FileSystems.join(directory, f".tmp-{name}")
    with FileSystems.create(tmp) as f:
        f.write(data)
    FileSystems.rename([tmp], [final])


class _BundleWriter(beam.DoFn):
    """Buffers a bundle's elements and writes them when the bundle finishes."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, directory: str, counter: str) -> None:
        self._dir = directory
        self._counter_name = counter
        self._buffer: list[Any] = []

    def setup(self) -> None:
        self._rows = beam.metrics.Metrics.counter(NAMESPACE, self._counter_name)
        ensure_dir(self._dir)

    def start_bundle(self) -> None:
        self._buffer = []

    def process(self, element: Any) -> Iterator[None]:
        self._buffer.append(element)
        return iter(())

    def finish_bundle(self) -> None:
        if not self._buffer:
            return
        payloads, rows = self.encode(self._buffer)
        digest = hashlib.sha1(payloads[0]).hexdigest()[:20]
        for suffix, data in zip(self.suffixes, payloads, strict=True):
            _write_atomically(self._dir, f"part-{digest}.{suffix}", data)
        self._rows.inc(rows)
        self._buffer = []

    def encode(self, elements: list[Any]) -> tuple[list[bytes], int]:
        raise NotImplementedError


class _BatchWriter(_BundleWriter):
    def __init__(self, directory: str, counter: str, formats: tuple[str, ...]) -> None:
        super().__init__(directory, counter)
        self.suffixes = formats

    def encode(self, elements: list[pa.RecordBatch]) -> tuple[list[bytes], int]:
        # Plain string keys in the files, however the pipeline carried them.
        table = pa.Table.from_batches([mb.plain_keys(b) for b in elements])
        payloads: list[bytes] = []
        for fmt in self.suffixes:
            if fmt == "jsonl":
                # Vectorized over slices of the bundle, not per small batch (and under
                # Arrow's 2 GiB limit for one string array).
                slices = table.combine_chunks().to_batches(max_chunksize=_JSON_SLICE_ROWS)
                payloads.append(b"".join(batch_to_json_lines(b) for b in slices))
            else:
                buf = io.BytesIO()
                pq.write_table(table, buf)
                payloads.append(buf.getvalue())
        return payloads, table.num_rows


# one encoder for every record (json.dumps with options builds one per call)
_RECORD_JSON = json.JSONEncoder(sort_keys=True, default=str)


class _RecordWriter(_BundleWriter):
    suffixes = ("jsonl",)

    def encode(self, elements: list[Mapping[str, Any]]) -> tuple[list[bytes], int]:
        records = [e.to_record() if isinstance(e, DeadLetter) else e for e in elements]
        encode = _RECORD_JSON.encode
        lines = "".join([encode(r) + "\n" for r in records])
        rows = sum(int(r.get("rows", 1)) for r in records)
        return [lines.encode()], rows


class WriteBatches(beam.PTransform):
    """Write micro-batches under ``directory`` as Parquet and/or JSONL part files.

    Counts the rows written in the counter ``counter`` (namespace ``streaming_ml``).
    """

    def __init__(self, directory: str, *, counter: str, formats: tuple[str, ...] = FORMATS) -> None:
        super().__init__()
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            msg = f"formats must be a non-empty subset of {FORMATS!r}, got {formats!r}"
            raise ValueError(msg)
        self._writer = _BatchWriter(directory, counter, tuple(formats))

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "WriteParts" >> beam.ParDo(self._writer)


class WriteRecords(beam.PTransform):
    """Write records (dicts, or :class:`~model.vocabulary.DeadLetter`) under
    ``directory`` as JSONL part files.

    The counter adds each record's ``rows`` field (default 1): a dead-letter record
    for a late piece stands for all of its events.
    """

    def __init__(self, directory: str, *, counter: str) -> None:
        super().__init__()
        self._writer = _RecordWriter(directory, counter)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "WriteParts" >> beam.ParDo(self._writer)


def read_parquet_dir(
    directory: str, *, distinct_on: Sequence[str] = (), columns: Sequence[str] | None = None
) -> pa.Table | None:
    """All Parquet part files under ``directory`` as one table (None if there are none).

    With ``distinct_on`` (e.g. ``key`` and ``event_id``), one row per value of those
    columns, the first found: a bundle replayed after a restore with other boundaries
    repeats its rows in another file (see the module's doc). ``columns``: only these.
    """
    matches = FileSystems.match([FileSystems.join(directory, "part-*.parquet")])[0]
    wanted = None if columns is None else list(dict.fromkeys([*columns, *distinct_on]))
    tables = [pq.read_table(m.path, columns=wanted) for m in matches.metadata_list]
    if not tables:
        return None
    table = pa.concat_tables(tables)
    return distinct(table, distinct_on) if distinct_on else table


def distinct(table: pa.Table, on: Sequence[str]) -> pa.Table:
    """``table`` with one row per value of the columns ``on``: the first, in order."""
    position = "__position"
    numbered = table.select(list(on)).append_column(
        position, pa.array(np.arange(table.num_rows, dtype=np.int64))
    )
    first = numbered.group_by(list(on), use_threads=False).aggregate([(position, "min")])
    keep = first.column(f"{position}_min").to_numpy()
    if len(keep) == table.num_rows:
        return table
    return table.take(pa.array(np.sort(keep)))


def count_parquet_rows(directory: str) -> int:
    """Rows in the Parquet part files under ``directory``, from their footers only."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.parquet")])[0]
    total = 0
    for m in matches.metadata_list:
        with FileSystems.open(m.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_jsonl_table(directory: str, schema: pa.Schema) -> pa.Table | None:
    """The JSONL part files under ``directory``, records of ``schema`` (window
    statistics), as one table (Arrow's JSON reader; None if there are none)."""
    data = b"".join(_jsonl_parts(directory))
    if not data.strip():
        return None
    options = pa_json.ParseOptions(explicit_schema=schema)
    return pa_json.read_json(pa.py_buffer(data), parse_options=options)


def read_jsonl_dir(directory: str) -> list[dict[str, Any]]:
    """All records of the JSONL part files under ``directory``."""
    rows: list[dict[str, Any]] = []
    for data in _jsonl_parts(directory):
        lines = [line for line in data.decode().splitlines() if line]
        rows.extend(json.loads("[" + ",".join(lines) + "]"))  # one parse per file
    return rows


def _jsonl_parts(directory: str) -> Iterator[bytes]:
    """The bytes of each JSONL part file under ``directory``, in name order (each
    ends with a line end: the writers end every record with one)."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.jsonl")])[0]
    for m in sorted(matches.metadata_list, key=lambda m: m.path):
        with FileSystems.open(m.path) as f:
            yield f.read()
