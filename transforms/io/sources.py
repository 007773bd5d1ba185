"""Sources of micro-batches: the synthetic stream and CSV files, bounded or streaming.

Bounded mode reads on the workers (``Impulse`` + a generating ``DoFn``); every batch is
stamped with its smallest event time and carries no watermark (in a batch run nothing
is late, so the windowing step passes it through unjudged).

Streaming mode replays the same chunks as an unbounded PCollection through Beam's
``TestStream``: each chunk is added, then the watermark advances to the source's
watermark after it, so out-of-order and late events behave exactly as they would from
a live source, deterministically, on the DirectRunner and on Flink. On Flink (and any
runner that runs TestStream outside Python) elements travel as bytes (Arrow IPC, then
a decoding step), because such a TestStream needs a standard coder; the streaming
DirectRunner runs TestStream in Python and gets the batches as they are. The chunks
are built when the pipeline is constructed, so a replay holds the whole stream in the
pipeline graph: fine for tests, demos and benchmarks up to a few million events.
(The DirectRunner's splittable-DoFn support holds the watermark at -inf until a
restriction finishes, so an SDF source would fire every window only at the end.)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from model import batch as mb
from model.streams.csv_parse import CsvFormat, parse_lines
from model.streams.synthetic import SyntheticConfig, generate
from transforms.io.coders import RecordBatchCoder, decode_batch, encode_batch
from transforms.window import lateness

NAMESPACE = lateness.NAMESPACE
_BATCH, _DEAD = b"B", b"D"
_NO_WATERMARK = MIN_TIMESTAMP.micros


@dataclass(frozen=True)
class SourceOut:
    """``batches``: micro-batches; ``dead_letter``: records of rejected input rows;
    ``events``: how many input events there are, when known before the run (replays,
    whose events the ``events_in`` counter counts only where they are decoded from
    bytes). Otherwise the ``events_in`` counter counts them as they are read."""

    batches: beam.PCollection
    dead_letter: beam.PCollection
    events: int | None = None


def stamped(batch: pa.RecordBatch) -> bw.TimestampedValue:
    """A bounded source's batch: stamped, no watermark (nothing is late in batch)."""
    return bw.TimestampedValue(batch, Timestamp(micros=mb.min_event_time_us(batch)))


class _DecodeDoFn(beam.DoFn):
    """Bytes from a replay back to micro-batches (main) or dead-letter dicts."""

    def __init__(self) -> None:
        self._events = beam.metrics.Metrics.counter(NAMESPACE, "events_in")

    def process(self, data: bytes) -> Iterator[object]:
        tag, body = data[:1], data[1:]
        if tag == _DEAD:
            record = json.loads(body)
            self._events.inc(int(record.get("rows", 1)))
            yield beam.pvalue.TaggedOutput("dead_letter", record)
            return
        batch = decode_batch(body)
        self._events.inc(batch.num_rows)
        yield batch  # keeps the element's timestamp


class WatermarkPacer:
    """When a replay emits its watermark: after a chunk, once the source's watermark
    is ``interval_us`` (event time) past the last one emitted, like a live source's
    periodic watermark (Flink's ``autoWatermarkInterval``); the first one at once.
    Watermarks are ms-aligned, as runner APIs carry them. Shared by :func:`replay` and
    the benchmarks' per-event replays, so both see the same steps."""

    def __init__(self, interval_us: int) -> None:
        self.interval_us = interval_us
        self.watermark = _NO_WATERMARK  # the last one emitted

    def due(self, watermark_after_us: int, *, force: bool = False) -> int | None:
        """The watermark to emit after a chunk whose source watermark is
        ``watermark_after_us``, or None; ``force``: whenever it moved at all."""
        after = watermark_after_us - watermark_after_us % 1000
        if after <= self.watermark:
            return None
        if force or self.watermark == _NO_WATERMARK or after - self.watermark >= self.interval_us:
            self.watermark = after
            return after
        return None


def _runs_test_stream_in_python(pipeline: beam.Pipeline) -> bool:
    """Whether the pipeline's runner executes TestStream here, in Python (the streaming
    DirectRunner), so that its elements may use a Python-only coder; Flink and Prism
    execute it in Java or Go."""
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    return isinstance(pipeline.runner, BundleBasedDirectRunner)


def replay(
    pipeline: beam.Pipeline,
    items: Iterable[tuple[pa.RecordBatch | None, int, list[dict[str, object]]]],
    *,
    processing_time_per_chunk_s: float | None = None,
    watermark_interval_s: float = 0.0,
    label: str = "Replay",
) -> SourceOut:
    """A streaming source replaying ``(batch, watermark_after_us, dead_records)`` items.

    Each batch is tagged with the watermark in force *before* it arrives; the watermark
    then moves to ``watermark_after_us``. ``watermark_interval_s`` emits watermarks
    periodically instead, like a live source (Flink's ``autoWatermarkInterval``): the
    watermark moves only once the source's watermark is that far (event time) past the
    last one emitted, and the chunks in between arrive together, before it (fewer,
    larger bundles; nothing that was on time becomes late). ``processing_time_per_chunk_s``
    also advances processing time after each chunk (DirectRunner only; Flink's
    TestStream cannot), and then every chunk arrives on its own.
    """
    if watermark_interval_s < 0:
        msg = f"watermark interval must be >= 0 seconds, got {watermark_interval_s!r}"
        raise ValueError(msg)
    pacer = WatermarkPacer(round(watermark_interval_s * mb.US_PER_SECOND))
    # ("add", [(batch or dead record, timestamp)]), ("watermark", us) or ("time", s)
    steps: list[tuple[str, object]] = []
    events, dead_records = 0, False
    arrived: list[tuple[object, Timestamp]] = []
    for batch, watermark_after, dead in items:
        events += sum(int(r.get("rows", 1)) for r in dead)  # type: ignore[call-overload]
        if batch is not None and batch.num_rows:
            events += batch.num_rows
            tagged = lateness.with_watermark(batch, pacer.watermark)
            arrived.append((tagged, Timestamp(micros=mb.min_event_time_us(batch))))
        for record in dead:
            arrived.append((record, Timestamp(micros=max(pacer.watermark, 0))))
            dead_records = True
        every_chunk = bool(processing_time_per_chunk_s)
        emit = pacer.due(watermark_after, force=every_chunk)
        if emit is not None or every_chunk:
            if arrived:
                steps.append(("add", arrived))
                arrived = []
            if emit is not None:
                steps.append(("watermark", emit))
        if processing_time_per_chunk_s:
            steps.append(("time", processing_time_per_chunk_s))
    if arrived:
        steps.append(("add", arrived))
    # Batches as they are where the runner allows it and there is nothing to sort out;
    # otherwise tagged bytes, then a step that decodes them and sets dead letters apart.
    plain = not dead_records and _runs_test_stream_in_python(pipeline)
    stream = TestStream(coder=RecordBatchCoder() if plain else beam.coders.BytesCoder())
    for kind, value in steps:
        if kind == "add":
            assert isinstance(value, list)
            stream = stream.add_elements(
                [bw.TimestampedValue(v if plain else _encoded(v), ts) for v, ts in value]
            )
        elif kind == "watermark":
            assert isinstance(value, int)
            stream = stream.advance_watermark_to(Timestamp(micros=value))
        else:
            assert isinstance(value, float | int)
            stream = stream.advance_processing_time(value)
    stream = stream.advance_watermark_to_infinity()
    if plain:
        batches = pipeline | label >> stream.with_output_types(pa.RecordBatch)
        empty = pipeline | f"{label}NoDeadLetters" >> beam.Create([])
        return SourceOut(batches=batches, dead_letter=empty, events=events)
    decoded = (
        pipeline
        # The output coder must be the stream's own: a runner that executes the
        # TestStream itself (Flink) emits the elements encoded with it.
        | label >> stream.with_output_types(bytes)
        | f"{label}Decode"
        >> beam.ParDo(_DecodeDoFn())
        .with_output_types(pa.RecordBatch)
        .with_outputs("dead_letter", main="batches")
    )
    return SourceOut(batches=decoded.batches, dead_letter=decoded.dead_letter, events=events)


def _encoded(value: object) -> bytes:
    """A replayed element as tagged bytes: a batch as Arrow IPC, a dead record as JSON."""
    if isinstance(value, pa.RecordBatch):
        return _BATCH + encode_batch(value)
    return _DEAD + json.dumps(value).encode()


class _GenerateDoFn(beam.DoFn):
    def __init__(self, config: SyntheticConfig) -> None:
        self._config = config
        self._events = beam.metrics.Metrics.counter(NAMESPACE, "events_in")

    def process(self, _: bytes) -> Iterator[bw.TimestampedValue]:
        for chunk in generate(self._config):
            self._events.inc(chunk.batch.num_rows)
            yield stamped(chunk.batch)


class SyntheticSource(beam.PTransform):
    """The synthetic drifting stream (:mod:`model.streams.synthetic`) as micro-batches.

    ``streaming=True`` replays it with watermarks (unbounded PCollection); otherwise it
    is generated on a worker as a bounded PCollection.
    """

    def __init__(
        self,
        config: SyntheticConfig,
        *,
        streaming: bool = False,
        processing_time_per_chunk_s: float | None = None,
        watermark_interval_s: float = 0.0,
    ) -> None:
        super().__init__()
        self._config = config
        self._streaming = streaming
        self._ptime = processing_time_per_chunk_s
        self._interval = watermark_interval_s

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:  # type: ignore[override]
        if self._streaming:
            items = (
                (c.batch, c.watermark_us, list[dict[str, object]]()) for c in generate(self._config)
            )
            return replay(
                pbegin.pipeline,
                items,
                processing_time_per_chunk_s=self._ptime,
                watermark_interval_s=self._interval,
                label="Synthetic",
            )
        batches = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Generate"
            >> beam.ParDo(_GenerateDoFn(self._config)).with_output_types(pa.RecordBatch)
        )
        empty = pbegin | "NoDeadLetters" >> beam.Create([])
        return SourceOut(batches=batches, dead_letter=empty)


def _read_lines(path: str) -> Iterator[str]:
    with FileSystems.open(path) as raw:
        yield from io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


class _ReadCsvDoFn(beam.DoFn):
    def __init__(self, fmt: CsvFormat) -> None:
        self._fmt = fmt
        self._events = beam.metrics.Metrics.counter(NAMESPACE, "events_in")

    def process(self, path: str) -> Iterator[object]:
        for chunk in parse_lines(_read_lines(path), self._fmt, path):
            if chunk.batch is not None:
                self._events.inc(chunk.batch.num_rows)
                yield stamped(chunk.batch)
            for record in chunk.dead:
                self._events.inc(record["rows"])
                yield beam.pvalue.TaggedOutput("dead_letter", record)


def _csv_replay_items(
    paths: list[str], fmt: CsvFormat, watermark_lag_s: float
) -> Iterator[tuple[pa.RecordBatch | None, int, list[dict[str, object]]]]:
    lag_us = round(watermark_lag_s * mb.US_PER_SECOND)
    newest = watermark = _NO_WATERMARK
    for path in paths:
        for chunk in parse_lines(_read_lines(path), fmt, path):
            if chunk.batch is not None:
                newest = max(newest, int(np.max(mb.event_times_us(chunk.batch))))
                watermark = max(watermark, newest - lag_us)
            yield chunk.batch, watermark, chunk.dead


class CsvSource(beam.PTransform):
    """CSV files (see :mod:`model.streams.csv_parse`) as micro-batches plus dead letters.

    Every data line is either in a batch or in ``dead_letter``; ``events_in`` counts both.
    """

    def __init__(
        self,
        paths: list[str],
        fmt: CsvFormat,
        *,
        streaming: bool = False,
        watermark_lag_s: float = 0.0,
        watermark_interval_s: float = 0.0,
    ) -> None:
        super().__init__()
        if not paths:
            raise ValueError("CsvSource needs at least one input path")
        self._paths = paths
        self._fmt = fmt
        self._streaming = streaming
        self._lag = watermark_lag_s
        self._interval = watermark_interval_s

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:  # type: ignore[override]
        if self._streaming:
            items = _csv_replay_items(self._paths, self._fmt, self._lag)
            return replay(pbegin.pipeline, items, watermark_interval_s=self._interval, label="Csv")
        read = (
            pbegin
            | "Paths" >> beam.Create(self._paths)
            | "ReadCsv"
            >> beam.ParDo(_ReadCsvDoFn(self._fmt))
            .with_output_types(pa.RecordBatch)
            .with_outputs("dead_letter", main="batches")
        )
        return SourceOut(batches=read.batches, dead_letter=read.dead_letter)
