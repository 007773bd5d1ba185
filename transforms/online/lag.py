"""The per-key lagged label as a feature, in Beam state (:mod:`model.streams.lag`).

``batches | LagLabels(num_classes)`` appends to every event's features the one-hot
class of its key's previous event (strictly earlier in event time, among the events
seen so far; all zeros when none is known): what a no-change classifier predicts,
for the learner to weigh against the features. Put it before the windowing, so the
trainer and the scorer see the same features.

One state key holds every event key's newest (time, label), so batches stay whole
and are worked through in arrival order; its state is a few bytes per key, kept in
Beam state (checkpointed with the job). The work per batch is a few vectorized
operations; being one key, it runs on one worker at a time, as the decoupled
trainer does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BytesCoder
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from model.streams.lag import LaggedLabels

_LAST = ReadModifyWriteStateSpec("last_labels", BytesCoder())
LAST = beam.DoFn.StateParam(_LAST)
_STATE_KEY = ""  # one state key for the stream: see the module docstring


class _LagDoFn(beam.DoFn):
    def __init__(self, num_classes: int) -> None:
        self._num_classes = num_classes

    def setup(self) -> None:
        self._lag = LaggedLabels(self._num_classes)

    def process(self, kv: tuple[str, pa.RecordBatch], last: Any = LAST) -> Iterator[pa.RecordBatch]:
        _, batch = kv
        self._lag.restore(last.read())
        out = self._lag.apply(batch)
        last.write(self._lag.snapshot())
        yield out  # at the batch's own timestamp


def _keyed(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    return _STATE_KEY, batch


class LagLabels(beam.PTransform):
    """Micro-batches with the lagged label appended to their features; see the
    module docstring. ``num_classes``: the one-hot's width."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        LaggedLabels(num_classes)  # validates
        self._num_classes = num_classes

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return (
            batches
            | "Key" >> beam.Map(_keyed).with_output_types(tuple[str, pa.RecordBatch])
            | "Lag" >> beam.ParDo(_LagDoFn(self._num_classes)).with_output_types(pa.RecordBatch)
        )
