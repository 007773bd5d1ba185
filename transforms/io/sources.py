"""Sources of micro-batches: the synthetic stream and CSV files, bounded or streaming.

Bounded mode reads on the workers (``Impulse`` + a generating ``DoFn``); every batch is
stamped with its smallest event time and carries no watermark (in a batch run nothing
is late, so the windowing step passes it through unjudged).

Streaming mode replays the same chunks as an unbounded PCollection
(:func:`transforms.io.replay.replay`): each chunk is added, then the watermark advances
to the source's watermark after it. ``python_test_stream`` says whether the runner
runs TestStream in Python (see :mod:`transforms.io.replay`); the runner set-up
(:mod:`runners`) answers it.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator
from typing import Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import Timestamp

from model import batch as mb
from model.streams.csv_parse import CsvFormat, ParsedChunk, parse_lines
from model.streams.delayed import delay_labels, merge_labels
from model.streams.label_file import LabelFormat, parse_label_lines
from model.streams.synthetic import SyntheticConfig, generate
from model.streams.tfrecord import parse_records, read_records
from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.replay import NO_WATERMARK, ReplayItem, SourceOut, replay


def stamped(batch: pa.RecordBatch) -> bw.TimestampedValue:
    """``batch`` stamped at its smallest event time (Beam's timestamp of a batch)."""
    return bw.TimestampedValue(batch, Timestamp(micros=mb.min_event_time_us(batch)))


class _GenerateDoFn(beam.DoFn):
    def __init__(self, config: SyntheticConfig) -> None:
        self._config = config
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def process(self, _: bytes) -> Iterator[bw.TimestampedValue]:
        for chunk in generate(self._config):
            self._events.inc(chunk.batch.num_rows)
            yield stamped(chunk.batch)


class SyntheticSource(beam.PTransform):
    """The synthetic drifting stream (:mod:`model.streams.synthetic`) as micro-batches.

    ``streaming=True`` replays it with watermarks (unbounded PCollection; the other
    arguments are :func:`~transforms.io.replay.replay`'s, and ``label_delay_s`` is
    :class:`CsvSource`'s); otherwise it is generated on a worker as a bounded
    PCollection.
    """

    def __init__(
        self,
        config: SyntheticConfig,
        *,
        streaming: bool = False,
        python_test_stream: bool = False,
        processing_time_per_chunk_s: float | None = None,
        watermark_interval_s: float = 0.0,
        label_delay_s: float | None = None,
        label_span_s: float = 1.0,
    ) -> None:
        super().__init__()
        self._label_delay_us = None if label_delay_s is None else round(label_delay_s * 1e6)
        self._label_span_us = round(label_span_s * 1e6)
        self._config = config
        self._streaming = streaming
        self._python = python_test_stream
        self._ptime = processing_time_per_chunk_s
        self._interval = watermark_interval_s

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        if self._streaming:
            items: Iterable[ReplayItem] = (
                (c.batch, c.watermark_us, list[DeadLetter]()) for c in generate(self._config)
            )
            if self._label_delay_us is not None:
                items = delay_labels(items, self._label_delay_us, self._label_span_us)
            return replay(
                pbegin.pipeline,
                items,
                python_test_stream=self._python,
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
        empty = pbegin | "NoDeadLetters" >> beam.Create([]).with_output_types(DeadLetter)
        return SourceOut(batches=batches, dead_letter=empty)


def _read_lines(path: str) -> Iterator[str]:
    with FileSystems.open(path) as raw:
        yield from io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


FileFormat = Literal["csv", "tfrecord"]


def parse_file(path: str, fmt: CsvFormat, file_format: FileFormat = "csv") -> Iterator[ParsedChunk]:
    """A file on any Beam filesystem as micro-batches and dead letters: CSV text, or
    TFRecord files of ``tf.Example`` records (decoded by tfx-bsl)."""
    if file_format == "tfrecord":
        with FileSystems.open(path) as raw:
            yield from parse_records(read_records(raw), fmt, path)
        return
    yield from parse_lines(_read_lines(path), fmt, path)


class _ReadCsvDoFn(beam.DoFn):
    def __init__(self, fmt: CsvFormat, file_format: FileFormat) -> None:
        self._fmt = fmt
        self._file_format = file_format
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def process(self, path: str) -> Iterator[object]:
        for chunk in parse_file(path, self._fmt, self._file_format):
            if chunk.batch is not None:
                self._events.inc(chunk.batch.num_rows)
                yield stamped(chunk.batch)
            for record in chunk.dead:
                self._events.inc(record.rows)
                yield beam.pvalue.TaggedOutput("dead_letter", record)


class _ReadLabelsDoFn(beam.DoFn):
    """A labels file as label-only batches (main) and its bad rows' dead letters."""

    def __init__(self, fmt: LabelFormat) -> None:
        self._fmt = fmt

    def process(self, path: str) -> Iterator[object]:
        for chunk in parse_label_lines(_read_lines(path), self._fmt, path):
            if chunk.batch is not None:
                yield stamped(chunk.batch)
            for record in chunk.dead:
                yield beam.pvalue.TaggedOutput("dead_letter", record)


def _replay_items(
    paths: list[str], fmt: CsvFormat, watermark_lag_s: float, file_format: FileFormat
) -> Iterator[ReplayItem]:
    lag_us = round(watermark_lag_s * mb.US_PER_SECOND)
    newest = watermark = NO_WATERMARK
    for path in paths:
        for chunk in parse_file(path, fmt, file_format):
            if chunk.batch is not None:
                newest = max(newest, int(np.max(mb.event_times_us(chunk.batch))))
                watermark = max(watermark, newest - lag_us)
            yield chunk.batch, watermark, chunk.dead


class CsvSource(beam.PTransform):
    """CSV files (see :mod:`model.streams.csv_parse`) as micro-batches plus dead letters;
    with ``file_format="tfrecord"``, TFRecord files of ``tf.Example`` records
    (:mod:`model.streams.tfrecord`, the same columns by feature name).

    Every data line (record) is either in a batch or in ``dead_letter``;
    ``events_in`` counts both. ``label_delay_s`` (streaming): each label arrives that
    much event time after its event (at most ``label_span_s`` later), as a label-only
    batch (:mod:`model.streams.delayed`; bounded runs read every label with its
    event, and :class:`transforms.online.labels.SplitLabels` parts them alike).
    ``labels`` (a labels file and its format, :mod:`model.streams.label_file`): the
    labels come from there instead, label-only batches among the events (streaming:
    each once the watermark passes its ``label_time``), its bad rows in
    ``label_dead_letter``.
    """

    def __init__(
        self,
        paths: list[str],
        fmt: CsvFormat,
        *,
        streaming: bool = False,
        python_test_stream: bool = False,
        watermark_lag_s: float = 0.0,
        watermark_interval_s: float = 0.0,
        file_format: FileFormat = "csv",
        label_delay_s: float | None = None,
        label_span_s: float = 1.0,
        labels: tuple[str, LabelFormat] | None = None,
    ) -> None:
        super().__init__()
        self._label_delay_us = None if label_delay_s is None else round(label_delay_s * 1e6)
        self._label_span_us = round(label_span_s * 1e6)
        if labels is not None and label_delay_s is not None:
            raise ValueError("labels come from a labels file or after a delay, not both")
        self._labels = labels
        if not paths:
            raise ValueError("CsvSource needs at least one input path")
        if file_format not in ("csv", "tfrecord"):
            msg = f"file_format must be 'csv' or 'tfrecord', got {file_format!r}"
            raise ValueError(msg)
        self._file_format: FileFormat = file_format
        self._paths = paths
        self._fmt = fmt
        self._streaming = streaming
        self._python = python_test_stream
        self._lag = watermark_lag_s
        self._interval = watermark_interval_s

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        if self._streaming:
            items = _replay_items(self._paths, self._fmt, self._lag, self._file_format)
            label_dead: list[DeadLetter] = []
            if self._label_delay_us is not None:
                items = delay_labels(items, self._label_delay_us, self._label_span_us)
            elif self._labels is not None:
                path, fmt = self._labels
                chunks = list(parse_label_lines(_read_lines(path), fmt, path))
                label_dead = [record for chunk in chunks for record in chunk.dead]
                batches = [chunk.batch for chunk in chunks if chunk.batch is not None]
                items = merge_labels(items, batches, self._label_span_us)
            out = replay(
                pbegin.pipeline,
                items,
                python_test_stream=self._python,
                watermark_interval_s=self._interval,
                label="Csv",
            )
            if self._labels is None:
                return out
            rejected = pbegin | "LabelDeadLetters" >> beam.Create(label_dead).with_output_types(
                DeadLetter
            )
            return dataclasses.replace(out, label_dead_letter=rejected)
        read = (
            pbegin
            | "Paths" >> beam.Create(self._paths)
            | "ReadCsv"
            >> beam.ParDo(_ReadCsvDoFn(self._fmt, self._file_format))
            .with_output_types(pa.RecordBatch, dead_letter=DeadLetter)
            .with_outputs("dead_letter", main="batches")
        )
        if self._labels is None:
            return SourceOut(batches=read.batches, dead_letter=read.dead_letter)
        path, fmt = self._labels
        labels = (
            pbegin
            | "LabelsPath" >> beam.Create([path])
            | "ReadLabels"
            >> beam.ParDo(_ReadLabelsDoFn(fmt))
            .with_output_types(pa.RecordBatch, dead_letter=DeadLetter)
            .with_outputs("dead_letter", main="batches")
        )
        batches = (read.batches, labels.batches) | "EventsAndLabels" >> beam.Flatten()
        return SourceOut(batches, read.dead_letter, label_dead_letter=labels.dead_letter)
