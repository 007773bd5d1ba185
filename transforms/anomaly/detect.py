"""Per-key streaming anomaly detection, its state in Beam state.

``batches | DetectAnomalies()`` scores every event with its key's
:class:`model.anomaly.detectors.KeyDetector` (one per key and feature column; a row's
score is the largest of its columns', an alarm if any column alarms), each event from
the events of its key before it, then learns it. Output rows: ``key``,
``event_time``, ``event_id`` and ``label`` (when the input has them), ``value`` (the
first feature), ``anomaly_score`` in [0, 1], ``is_anomaly``.

The detectors' state is Beam state (checkpointed on Flink): one state key for the
stream (:class:`transforms.online.sequential.Sequential`: batches in arrival order
live, in event-time order in a bounded run), each key's detectors as bytes. At most
``resident`` keys stay decoded in memory (least recently used first out), the rest
are rebuilt from their bytes when their key comes again; the decoded ones are kept
across batches only while the state is the one this worker last wrote (a token in
the state says so: after a restore, or another worker's write, all are rebuilt).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import OrderedDict

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.anomaly.detectors import KeyDetector
from model.vocabulary import ANOMALY_SCORE, IS_ANOMALY, VALUE
from transforms.online.sequential import Sequential

TOKEN = 16  # bytes of the token that starts the state


class _AnomalyWorker:
    def __init__(self, resident: int, forecast: bool) -> None:
        self.resident, self.forecast = resident, forecast
        self.stored: dict[str, bytes] = {}  # (key, column) -> pickled KeyDetector
        self.live: OrderedDict[str, KeyDetector] = OrderedDict()
        self.token = b""
        self.rebuilt = 0  # detectors decoded from state (for tests and metrics)

    def restore(self, data: bytes | None) -> None:
        if data is not None and data[:TOKEN] == self.token and self.token:
            return  # the state is what this worker last wrote: its detectors are current
        self.live.clear()
        self.stored = {} if data is None else pickle.loads(data[TOKEN:])
        self.token = b"" if data is None else data[:TOKEN]

    def _detector(self, name: str) -> KeyDetector:
        detector = self.live.pop(name, None)
        if detector is None:
            saved = self.stored.get(name)
            detector = KeyDetector(forecast=self.forecast) if saved is None else pickle.loads(saved)
            self.rebuilt += saved is not None
        self.live[name] = detector
        while len(self.live) > self.resident:
            old, evicted = self.live.popitem(last=False)
            self.stored[old] = pickle.dumps(evicted)
        return detector

    def apply(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if not batch.num_rows:
            return []
        times = mb.event_times_us(batch)
        ids = np.zeros(len(times), np.int64)
        if mb.EVENT_ID in batch.schema.names:
            ids = batch.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
        order = np.lexsort((ids, times))  # each key's events in event-time order
        batch = batch.take(pa.array(order))
        times = times[order]
        features = mb.features_numpy(batch).astype(np.float64)
        codes, keys = mb.key_codes(batch)
        scores = np.zeros(batch.num_rows)
        alarms = np.zeros(batch.num_rows, dtype=bool)
        for code, key in enumerate(keys):
            rows = np.flatnonzero(codes == code)
            for column in range(features.shape[1]):
                detector = self._detector(f"{key}\x00{column}")
                score, alarm = detector.block(times[rows], features[rows, column])
                scores[rows] = np.maximum(scores[rows], score)
                alarms[rows] |= alarm
        carried = [c for c in mb.CARRIED if c in batch.schema.names]
        out = batch.select(carried)
        out = out.append_column(VALUE, pa.array(features[:, 0]))
        out = out.append_column(ANOMALY_SCORE, pa.array(scores))
        return [out.append_column(IS_ANOMALY, pa.array(alarms))]

    def snapshot(self) -> bytes:
        for name, detector in self.live.items():
            self.stored[name] = pickle.dumps(detector)
        self.token = os.urandom(TOKEN)
        return self.token + pickle.dumps(self.stored)


def _at_first_event(out: pa.RecordBatch, batch: pa.RecordBatch) -> int:
    return mb.min_event_time_us(batch)


class DetectAnomalies(beam.PTransform):
    """Anomaly rows for micro-batches; see the module docstring. ``resident``: keys
    (times feature columns) kept decoded in memory; ``forecast``: with the streaming
    Transformer's forecast residual among the detectors."""

    def __init__(self, resident: int = 1_000, forecast: bool = True) -> None:
        super().__init__()
        if resident < 1:
            raise ValueError(f"resident must be >= 1, got {resident!r}")
        self._resident, self._forecast = resident, forecast

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_AnomalyWorker, self._resident, self._forecast),
            _at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Detect" >> step
