"""The per-key lagged label as a feature, in Beam state (:mod:`model.streams.lag`).

``batches | LagLabels(num_classes)`` appends to every event's features the one-hot
class of its key's previous event (strictly earlier in event time, among the events
seen so far; all zeros when none is known): what a no-change classifier predicts,
for the learner to weigh against the features. Put it before the windowing, so the
trainer and the scorer see the same features.

One state key holds every event key's newest (time, label), so batches stay whole
and are worked through in arrival order (a bounded run: in event-time order, see
:mod:`transforms.online.sequential`); its state is a few bytes per key, kept in
Beam state (checkpointed with the job). The work per batch is a few vectorized
operations; being one key, it runs on one worker at a time, as the decoupled
trainer does.
"""

from __future__ import annotations

import functools

import apache_beam as beam
import pyarrow as pa

from model import batch as mb
from model.streams.lag import LaggedLabels
from transforms.online.sequential import Sequential


class _LagWorker:
    def __init__(self, num_classes: int) -> None:
        self.lag = LaggedLabels(num_classes)

    def restore(self, data: bytes | None) -> None:
        self.lag.restore(data)

    def apply(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        return [self.lag.apply(batch)] if batch.num_rows else []

    def snapshot(self) -> bytes:
        return self.lag.snapshot()


def _at_first_event(out: pa.RecordBatch, batch: pa.RecordBatch) -> int:
    return mb.min_event_time_us(batch)  # where the sources stamp a batch


class LagLabels(beam.PTransform):
    """Micro-batches with the lagged label appended to their features; see the
    module docstring. ``num_classes``: the one-hot's width."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        LaggedLabels(num_classes)  # validates
        self._num_classes = num_classes

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_LagWorker, self._num_classes),
            _at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Lag" >> step
