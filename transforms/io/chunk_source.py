"""Micro-batches from a list of chunks, bounded or replayed as a stream.

``ChunkSource(read)`` takes a picklable function giving ``(batch or None, watermark
after it, dead letters)`` items (what :func:`transforms.io.replay.replay` takes).
Streaming, it reads them where the pipeline is built and replays them with
watermarks (the TestStream holds them); bounded, a worker reads them (``Impulse``
and a reading step: the data is not pickled into the pipeline), and ``events_in``
counts the events and rejected rows as they are read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.replay import ReplayItem, SourceOut, replay
from transforms.io.sources import stamped

DEAD = "dead_letter"


class ChunkSource(beam.PTransform):
    """Micro-batches and dead letters from ``read()``; see the module docstring."""

    def __init__(
        self,
        read: Callable[[], Iterable[ReplayItem]],
        *,
        streaming: bool = False,
        python_test_stream: bool = False,
        watermark_interval_s: float = 0.0,
        label: str = "Replay",
    ) -> None:
        super().__init__()
        self._read, self._streaming, self._python = read, streaming, python_test_stream
        self._interval, self._label = watermark_interval_s, label

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        if self._streaming:
            items = list(self._read())
            events = sum((b.num_rows if b is not None else 0) + len(d) for b, _, d in items)
            out = replay(pbegin.pipeline, items, python_test_stream=self._python,
                         watermark_interval_s=self._interval, label=self._label)  # fmt: skip
            return SourceOut(batches=out.batches, dead_letter=out.dead_letter, events=events)
        read = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Read" >> beam.ParDo(_ReadDoFn(self._read)).with_outputs(DEAD, main="batches")
        )
        batches = read.batches
        batches.element_type = pa.RecordBatch  # the coder: Arrow IPC
        dead = read[DEAD]
        dead.element_type = DeadLetter
        return SourceOut(batches=batches, dead_letter=dead)


class _ReadDoFn(beam.DoFn):
    def __init__(self, read: Callable[[], Iterable[ReplayItem]]) -> None:
        self._read = read

    def setup(self) -> None:
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def process(self, _: bytes) -> Iterator[Any]:
        for batch, _watermark, dead in self._read():
            self._events.inc((batch.num_rows if batch is not None else 0) + len(dead))
            if batch is not None and batch.num_rows:
                yield stamped(batch)
            for record in dead:
                yield beam.pvalue.TaggedOutput(DEAD, record)
