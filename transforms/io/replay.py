"""Streaming replays: a recorded stream played back with its watermarks, via TestStream.

:func:`replay` adds each chunk of a stream, then advances the watermark to the
source's watermark after it, so out-of-order and late events behave exactly as they
would from a live source, deterministically, on every runner that runs TestStream.
The chunks are built when the pipeline is constructed, so a replay holds the whole
stream in the pipeline graph: for tests, demos and benchmarks up to a few million
events. (A live source is a splittable DoFn; the DirectRunner's SDF support holds the
watermark at -inf until a restriction finishes, so it would fire every window only
at the end.)

How the elements travel depends on where the runner runs TestStream, which the caller
says (``python_test_stream``, from :func:`runners.direct.executes_test_stream_in_python`
in this project): a runner that runs it in Java or Go (Flink, Prism, portable) needs
a standard coder, so batches go as tagged bytes (Arrow IPC, or JSON for a dead
letter) and a decoding step follows; a runner that runs it in Python (the streaming
DirectRunner) can take the batches as they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from model import batch as mb
from model.batch import decode_batch, encode_batch
from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.coders import RecordBatchCoder

_BATCH, _DEAD = b"B", b"D"
NO_WATERMARK = mb.NO_WATERMARK
assert NO_WATERMARK == MIN_TIMESTAMP.micros
# (a batch or None, the source watermark after it, the dead letters read with it)
ReplayItem = tuple[pa.RecordBatch | None, int, list[DeadLetter]]


@dataclass(frozen=True)
class SourceOut:
    """``batches``: micro-batches; ``dead_letter``: :class:`~model.vocabulary.DeadLetter`
    records of rejected input rows; ``events``: how many input events there are, when
    known before the run (replays, whose events the ``events_in`` counter counts only
    where they are decoded from bytes). Otherwise the ``events_in`` counter counts
    them as they are read. ``label_dead_letter``: the rejected rows of a labels file
    (no events), where the source reads one. ``recount``: see below."""

    batches: beam.PCollection
    dead_letter: beam.PCollection
    events: int | None = None
    label_dead_letter: beam.PCollection | None = None
    # counts the input events again after the run, from the input itself (where a
    # runner's restore restarts the events_in counter: Beam's on Flink)
    recount: Callable[[], int] | None = None
    # whether the read is over (every part of it ended after the wall time given), for a
    # runner that keeps the job running after it (a live read that ends: see
    # transforms.io.kafka); None: the job ends with its read
    finished: Callable[[float], bool] | None = None


class WatermarkPacer:
    """When a replay emits its watermark: after a chunk, once the source's watermark
    is ``interval_us`` (event time) past the last one emitted, like a live source's
    periodic watermark (Flink's ``autoWatermarkInterval``); the first one at once.
    Watermarks are ms-aligned, as runner APIs carry them. Shared by :func:`replay` and
    the benchmarks' per-event replays, so both see the same steps."""

    def __init__(self, interval_us: int) -> None:
        self.interval_us = interval_us
        self.watermark = NO_WATERMARK  # the last one emitted

    def due(self, watermark_after_us: int, *, force: bool = False) -> int | None:
        """The watermark to emit after a chunk whose source watermark is
        ``watermark_after_us``, or None; ``force``: whenever it moved at all."""
        after = watermark_after_us - watermark_after_us % 1000
        if after <= self.watermark:
            return None
        if force or self.watermark == NO_WATERMARK or after - self.watermark >= self.interval_us:
            self.watermark = after
            return after
        return None


class _DecodeDoFn(beam.DoFn):
    """Bytes from a replay back to micro-batches (main) or dead letters."""

    def __init__(self) -> None:
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def process(self, data: bytes) -> Iterator[object]:
        tag, body = data[:1], data[1:]
        if tag == _DEAD:
            record = DeadLetter.from_record(json.loads(body))
            self._events.inc(record.rows)
            yield beam.pvalue.TaggedOutput("dead_letter", record)
            return
        batch = decode_batch(body)
        if not mb.is_label_batch(batch):  # labels that follow their events are no events
            self._events.inc(batch.num_rows)
        yield batch  # keeps the element's timestamp


def _encoded(value: pa.RecordBatch | DeadLetter) -> bytes:
    """A replayed element as tagged bytes: a batch as Arrow IPC, a dead letter as JSON."""
    if isinstance(value, pa.RecordBatch):
        return _BATCH + encode_batch(value)
    return _DEAD + json.dumps(value.to_record(), default=str).encode()


def replay(
    pipeline: beam.Pipeline,
    items: Iterable[ReplayItem],
    *,
    python_test_stream: bool = False,
    processing_time_per_chunk_s: float | None = None,
    watermark_interval_s: float = 0.0,
    label: str = "Replay",
) -> SourceOut:
    """A streaming source replaying ``(batch, watermark_after_us, dead_letters)`` items.

    Each batch is tagged with the watermark in force *before* it arrives; the watermark
    then moves to ``watermark_after_us``. ``watermark_interval_s`` emits watermarks
    periodically instead, like a live source (Flink's ``autoWatermarkInterval``): the
    watermark moves only once the source's watermark is that far (event time) past the
    last one emitted, and the chunks in between arrive together, before it (fewer,
    larger bundles; nothing that was on time becomes late). ``processing_time_per_chunk_s``
    also advances processing time after each chunk (DirectRunner only; Flink's
    TestStream cannot), and then every chunk arrives on its own.
    ``python_test_stream``: the runner runs TestStream in Python (see the module
    docstring); False is right for every runner, True saves a decoding step.
    """
    if watermark_interval_s < 0:
        msg = f"watermark interval must be >= 0 seconds, got {watermark_interval_s!r}"
        raise ValueError(msg)
    pacer = WatermarkPacer(round(watermark_interval_s * mb.US_PER_SECOND))
    # ("add", [(batch or dead letter, timestamp)]), ("watermark", us) or ("time", s)
    steps: list[tuple[str, object]] = []
    events, dead_letters = 0, False
    arrived: list[tuple[pa.RecordBatch | DeadLetter, Timestamp]] = []
    for batch, watermark_after, dead in items:
        events += sum(record.rows for record in dead)
        if batch is not None and batch.num_rows:
            stamp = mb.min_event_time_us(batch)
            if mb.is_label_batch(batch):  # no events; known now: on time, holds watermarks
                stamp = max(stamp, pacer.watermark)
            else:
                events += batch.num_rows
            tagged = mb.with_watermark(batch, pacer.watermark)
            arrived.append((tagged, Timestamp(micros=stamp)))
        for record in dead:
            arrived.append((record, Timestamp(micros=max(pacer.watermark, 0))))
            dead_letters = True
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
    plain = python_test_stream and not dead_letters
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
        empty = pipeline | f"{label}NoDeadLetters" >> beam.Create([]).with_output_types(DeadLetter)
        return SourceOut(batches=batches, dead_letter=empty, events=events)
    decoded = (
        pipeline
        # The output coder must be the stream's own: a runner that executes the
        # TestStream itself (Flink) emits the elements encoded with it.
        | label >> stream.with_output_types(bytes)
        | f"{label}Decode"
        >> beam.ParDo(_DecodeDoFn())
        .with_output_types(pa.RecordBatch, dead_letter=DeadLetter)
        .with_outputs("dead_letter", main="batches")
    )
    return SourceOut(batches=decoded.batches, dead_letter=decoded.dead_letter, events=events)
