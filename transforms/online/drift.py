"""Drift detection inside the pipeline, in Beam state (:class:`model.drift.KeyedDrift`).

``predictions | DetectDrift(spec)`` watches every key's prequential error (a scored
row with a label: 1 when the prediction was wrong) with one detector per key and
emits an alarm record per drift (and per warning, with ``warnings=True``): the key,
the event time and id of the row that completed it, the detector, its statistic,
and the event-time window of the row (``spec``: the input's windows). The detectors'
states live in Beam state (one state key for the stream, as the lagged label's), so
the runner checkpoints them; a bounded run takes the batches in event-time order
(:mod:`transforms.online.sequential`).
"""

from __future__ import annotations

import functools
import pickle
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.transforms import window as bw

from model import batch as mb
from model.drift import KeyedDrift
from transforms.online.sequential import Sequential
from transforms.window.spec import WindowSpec


class _DriftWorker:
    def __init__(self, detector: str, spec: WindowSpec, warnings: bool) -> None:
        self.drift = KeyedDrift(detector)
        self.spec = spec
        self.warnings = warnings

    def restore(self, data: bytes | None) -> None:
        self.drift.states = {} if data is None else pickle.loads(data)

    def snapshot(self) -> bytes:
        return pickle.dumps(self.drift.states)

    def apply(self, batch: pa.RecordBatch) -> list[dict[str, Any]]:
        labels = mb.labels_numpy(batch)
        if labels is None or mb.PREDICTION not in batch.schema.names or not batch.num_rows:
            return []
        codes, keys = mb.key_codes(batch)
        times = mb.event_times_us(batch)
        predictions = batch.column(mb.PREDICTION).to_numpy(zero_copy_only=False)
        errors = (predictions != labels).astype(np.float64)
        ids = batch.column(mb.EVENT_ID) if mb.EVENT_ID in batch.schema.names else None
        records = []
        for key, row, kind, stat in self.drift.update(keys, codes, times, errors):
            if kind == 0 and not self.warnings:
                continue
            t = int(times[row])
            start, end = self._window_of(t)
            records.append(
                {
                    "key": key,
                    "event_time_us": t,
                    "event_id": None if ids is None else ids[row].as_py(),
                    "detector": self.drift.detector,
                    "kind": "drift" if kind else "warning",
                    "statistic": None if np.isnan(stat) else round(stat, 6),
                    "window_start_us": start,
                    "window_end_us": end,
                }
            )
        return records

    def _window_of(self, t_us: int) -> tuple[int | None, int | None]:
        if self.spec.kind not in ("fixed", "sliding"):
            return None, None
        end, _ = self.spec.window_bounds_us(t_us)
        return end - round(self.spec.size_s * 1e6), end


def _at_alarm(record: dict[str, Any], batch: pa.RecordBatch) -> int:
    return int(record["event_time_us"])


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
        worker = functools.partial(_DriftWorker, self._detector, self._spec, self._warnings)
        step = Sequential(worker, _at_alarm, element_type=pa.RecordBatch, output_type=dict)
        return predictions | "Global" >> beam.WindowInto(bw.GlobalWindows()) | "Detect" >> step
