"""Interaction events as micro-batches (:mod:`model.reco.events`), from CSV files or
the synthetic drifting-tastes stream (:mod:`model.streams.interactions`), bounded or
replayed as a stream with watermarks (:func:`transforms.io.replay.replay`).

A streaming replay reads the input where the pipeline is built (its TestStream holds
it); a bounded run reads it on a worker (``Impulse`` and a reading step: the data is
not pickled into the pipeline). Every row is a batch row or a dead letter: a replay's
``events`` counts both; a bounded read counts them in ``events_in``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from model.reco.events import Chunk, InteractionFormat, chunks, read_csv
from model.streams.interactions import InteractionsConfig, interactions
from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.replay import SourceOut, replay
from transforms.io.sources import stamped


def interaction_chunks(
    paths: Iterable[str], fmt: InteractionFormat, synthetic: InteractionsConfig | None
) -> list[Chunk]:
    """The chunks of every input in turn (``synthetic``: the generated stream)."""
    if synthetic is not None:
        table = pa.table(interactions(synthetic))
        plain = InteractionFormat("timestamp", "user", "item", "rating",
                                  fmt.chunk_rows, fmt.lag_s)  # fmt: skip
        return list(chunks(table, plain))
    out: list[Chunk] = []
    for path in paths:
        out += chunks(read_csv(path, fmt), fmt)
    return out


class InteractionsSource(beam.PTransform):
    """Interaction micro-batches and dead letters; see the module docstring."""

    def __init__(
        self,
        paths: Iterable[str] = (),
        fmt: InteractionFormat | None = None,
        *,
        synthetic: InteractionsConfig | None = None,
        streaming: bool = False,
        python_test_stream: bool = False,
        watermark_interval_s: float = 0.0,
    ) -> None:
        super().__init__()
        self._paths, self._fmt, self._synthetic = list(paths), fmt or InteractionFormat(), synthetic
        if not self._paths and synthetic is None:
            raise ValueError("InteractionsSource needs input paths or a synthetic config")
        self._streaming, self._python = streaming, python_test_stream
        self._interval = watermark_interval_s

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        if self._streaming:
            found = interaction_chunks(self._paths, self._fmt, self._synthetic)
            events = sum((c.batch.num_rows if c.batch else 0) + len(c.dead) for c in found)
            out = replay(
                pbegin.pipeline,
                ((c.batch, c.watermark_us, c.dead) for c in found),
                python_test_stream=self._python,
                watermark_interval_s=self._interval,
                label="Interactions",
            )
            return SourceOut(batches=out.batches, dead_letter=out.dead_letter, events=events)
        read = (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "Read"
            >> beam.ParDo(_ReadDoFn(self._paths, self._fmt, self._synthetic)).with_outputs(
                DEAD, main="batches"
            )
        )
        batches = read.batches
        batches.element_type = pa.RecordBatch  # the coder: Arrow IPC
        dead = read[DEAD]
        dead.element_type = DeadLetter
        return SourceOut(batches=batches, dead_letter=dead)


DEAD = "dead_letter"


class _ReadDoFn(beam.DoFn):
    def __init__(
        self, paths: list[str], fmt: InteractionFormat, synthetic: InteractionsConfig | None
    ) -> None:
        self._paths, self._fmt, self._synthetic = paths, fmt, synthetic

    def setup(self) -> None:
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def process(self, _: bytes) -> Iterator[Any]:
        for chunk in interaction_chunks(self._paths, self._fmt, self._synthetic):
            self._events.inc((chunk.batch.num_rows if chunk.batch else 0) + len(chunk.dead))
            if chunk.batch is not None:
                yield stamped(chunk.batch)
            for record in chunk.dead:
                yield beam.pvalue.TaggedOutput(DEAD, record)
