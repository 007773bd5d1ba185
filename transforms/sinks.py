"""File sinks: micro-batches to Parquet and JSONL, records (dicts) to JSONL.

Each bundle's rows go to one file per format, written to a temporary name and renamed
into place when the bundle finishes. The file name is a hash of the bundle's content,
so a bundle that the runner retries overwrites its own file instead of adding a
second copy (rows are expected to be distinct, e.g. by ``event_id``). Any path that
Beam's ``FileSystems`` understands works.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.lateness import NAMESPACE

FORMATS = ("parquet", "jsonl")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def batch_to_json_lines(batch: pa.RecordBatch) -> bytes:
    """One JSON object per row; timestamps as ISO 8601 UTC strings."""
    columns = {name: batch.column(name).to_pylist() for name in batch.schema.names}
    out = io.StringIO()
    for i in range(batch.num_rows):
        row = {name: _jsonable(values[i]) for name, values in columns.items()}
        out.write(json.dumps(row))
        out.write("\n")
    return out.getvalue().encode()


def _write_atomically(directory: str, name: str, data: bytes) -> None:
    final = FileSystems.join(directory, name)
    tmp = FileSystems.join(directory, f".tmp-{name}")
    with FileSystems.create(tmp) as f:
        f.write(data)
    FileSystems.rename([tmp], [final])


def _ensure_dir(directory: str) -> None:
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)


class _BundleWriter(beam.DoFn):
    """Buffers a bundle's elements and writes them when the bundle finishes."""

    suffixes: tuple[str, ...] = ()

    def __init__(self, directory: str, counter: str) -> None:
        self._dir = directory
        self._counter_name = counter
        self._buffer: list[Any] = []

    def setup(self) -> None:
        self._rows = beam.metrics.Metrics.counter(NAMESPACE, self._counter_name)
        _ensure_dir(self._dir)

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
        table = pa.Table.from_batches(elements)
        payloads: list[bytes] = []
        for fmt in self.suffixes:
            if fmt == "jsonl":
                payloads.append(b"".join(batch_to_json_lines(b) for b in table.to_batches()))
            else:
                buf = io.BytesIO()
                pq.write_table(table, buf)
                payloads.append(buf.getvalue())
        return payloads, table.num_rows


class _RecordWriter(_BundleWriter):
    suffixes = ("jsonl",)

    def encode(self, elements: list[dict[str, Any]]) -> tuple[list[bytes], int]:
        lines = "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in elements)
        rows = sum(int(e.get("rows", 1)) for e in elements)
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
    """Write dicts under ``directory`` as JSONL part files.

    The counter adds each record's ``rows`` field (default 1): a dead-letter record
    for a late piece stands for all of its events.
    """

    def __init__(self, directory: str, *, counter: str) -> None:
        super().__init__()
        self._writer = _RecordWriter(directory, counter)

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "WriteParts" >> beam.ParDo(self._writer)


def read_parquet_dir(directory: str) -> pa.Table | None:
    """All Parquet part files under ``directory`` as one table (None if there are none)."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.parquet")])[0]
    tables = [pq.read_table(m.path) for m in matches.metadata_list]
    return pa.concat_tables(tables) if tables else None


def count_parquet_rows(directory: str) -> int:
    """Rows in the Parquet part files under ``directory``, from their footers only."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.parquet")])[0]
    total = 0
    for m in matches.metadata_list:
        with FileSystems.open(m.path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def read_jsonl_dir(directory: str) -> list[dict[str, Any]]:
    """All records of the JSONL part files under ``directory``."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.jsonl")])[0]
    rows: list[dict[str, Any]] = []
    for m in sorted(matches.metadata_list, key=lambda m: m.path):
        with FileSystems.open(m.path) as f:
            rows.extend(json.loads(line) for line in f.read().decode().splitlines() if line)
    return rows
