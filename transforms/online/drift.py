"""Drift detection inside the pipeline, in Beam state (:class:`model.drift.KeyedDrift`).

``predictions | DetectDrift(spec)`` watches every key's prequential error (a scored
row with a label: 1 when the prediction was wrong) with one detector per key and
emits an alarm record per drift (and per warning, with ``warnings=True``): the key,
the event time and id of the row that completed it, the detector, its statistic,
and the event-time window of the row (``spec``: the input's windows). The detectors'
states live in Beam state (one state key for the stream, as the lagged label's), so
the runner checkpoints them.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import BytesCoder
from apache_beam.transforms import window as bw
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from model import batch as mb
from model.drift import KeyedDrift
from transforms.window.spec import WindowSpec

_STATES = ReadModifyWriteStateSpec("drift_states", BytesCoder())
STATES = beam.DoFn.StateParam(_STATES)


class _DriftDoFn(beam.DoFn):
    def __init__(self, detector: str, spec: WindowSpec, warnings: bool) -> None:
        self._detector = detector
        self._spec = spec
        self._warnings = warnings

    def process(
        self, kv: tuple[str, pa.RecordBatch], states: Any = STATES
    ) -> Iterator[bw.TimestampedValue]:
        _, batch = kv
        labels = mb.labels_numpy(batch)
        if labels is None or mb.PREDICTION not in batch.schema.names or not batch.num_rows:
            return
        drift = KeyedDrift(self._detector)
        stored = states.read()
        if stored is not None:
            drift.states = pickle.loads(stored)
        codes, keys = mb.key_codes(batch)
        times = mb.event_times_us(batch)
        predictions = batch.column(mb.PREDICTION).to_numpy(zero_copy_only=False)
        errors = (predictions != labels).astype(np.float64)
        alarms = drift.update(keys, codes, times, errors)
        states.write(pickle.dumps(drift.states))
        ids = batch.column(mb.EVENT_ID) if mb.EVENT_ID in batch.schema.names else None
        for key, row, kind, stat in alarms:
            if kind == 0 and not self._warnings:
                continue
            t = int(times[row])
            start, end = self._window_of(t)
            record = {
                "key": key,
                "event_time_us": t,
                "event_id": None if ids is None else ids[row].as_py(),
                "detector": self._detector,
                "kind": "drift" if kind else "warning",
                "statistic": None if np.isnan(stat) else round(stat, 6),
                "window_start_us": start,
                "window_end_us": end,
            }
            yield bw.TimestampedValue(record, t / 1e6)

    def _window_of(self, t_us: int) -> tuple[int | None, int | None]:
        if self._spec.kind not in ("fixed", "sliding"):
            return None, None
        end, _ = self._spec.window_bounds_us(t_us)
        return end - round(self._spec.size_s * 1e6), end


def _keyed(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    return "", batch


class DetectDrift(beam.PTransform):
    """Alarm records for drifts in every key's prequential error; see the module
    docstring. ``detector``: ``page-hinkley`` or ``ddm``."""

    def __init__(
        self, spec: WindowSpec, detector: str = "page-hinkley", *, warnings: bool = False
    ) -> None:
        super().__init__()
        KeyedDrift(detector)  # validates the name
        self._spec = spec
        self._detector = detector
        self._warnings = warnings

    def expand(self, predictions: beam.PCollection) -> beam.PCollection:
        return (
            predictions
            | "Global" >> beam.WindowInto(bw.GlobalWindows())
            | "Key" >> beam.Map(_keyed).with_output_types(tuple[str, pa.RecordBatch])
            | "Detect"
            >> beam.ParDo(_DriftDoFn(self._detector, self._spec, self._warnings)).with_output_types(
                dict
            )
        )
