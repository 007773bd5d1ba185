"""Per-key streaming anomaly detection, its state in Beam state.

``batches | DetectAnomalies()`` scores every event with its key's
:class:`model.anomaly.detectors.KeyDetector` (over all its feature columns: robust
and seasonal detectors per column, one forecaster of every column; a row's score is
the largest rise among them), each event from the events of its key before it, then
learns it. Output rows: ``key``, ``event_time``,
``event_id`` and ``label`` (when the input has them), ``value`` (the first feature),
``anomaly_score`` in [0, 1], ``is_anomaly``.

Each key's detectors are that key's Beam state (checkpointed on Flink): micro-batches
are split by key (:class:`transforms.online.sequential.Sequential` with a split: a
key's parts in arrival order live, in event-time order in a bounded run; keys spread
over the workers). A worker keeps at most ``resident`` keys' detectors decoded (least
recently used first out) and rebuilds the others from their state; a decoded one is
used only while the key's state is the one this worker last wrote for it (a random
token in the state says so: after a restore, or another worker's write, it is
rebuilt). Only the key whose part came is written back.
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
from transforms.online.sequential import TOKEN, Sequential, at_first_event

FORMAT = b"\x02"  # the state's format, after the token (1: a list of per-column detectors)


class _AnomalyWorker:
    """One key's part at a time: ``restore`` gets that key's state, ``apply`` its
    rows, ``snapshot`` its new state."""

    def __init__(self, resident: int, forecast: bool) -> None:
        self.resident, self.forecast = resident, forecast
        self.live: OrderedDict[str, tuple[bytes, KeyDetector]] = OrderedDict()
        self.state: bytes | None = None
        self.key: str | None = None
        self.rebuilt = 0  # detectors decoded from state (for tests)

    def restore(self, data: bytes | None) -> None:
        self.state = data
        for key in [k for k, (token, _) in self.live.items() if not token]:
            del self.live[key]  # applied, never written (a failed bundle): not to be trusted

    def _detector(self, key: str, columns: int) -> KeyDetector:
        data, cached = self.state, self.live.pop(key, None)
        current = b"" if data is None else data[:TOKEN]
        if cached is not None and cached[0] == current:
            # the state is what this worker last wrote for the key (or, in a bounded
            # run, where nothing is written, the detector since the start)
            detector = cached[1]
        elif data is not None:
            if data[TOKEN : TOKEN + 1] != FORMAT:
                msg = (
                    f"key {key!r}: its detector state was written by an older version of "
                    "the anomaly detector; start the job without that savepoint or output"
                )
                raise ValueError(msg)
            detector = pickle.loads(data[TOKEN + 1 :])
            self.rebuilt += 1
        else:
            detector = KeyDetector(forecast=self.forecast, columns=columns)
        if detector.columns != columns:
            msg = f"key {key!r} had {detector.columns} feature columns, now {columns}"
            raise ValueError(msg)
        self.live[key] = (b"", detector)  # written: see snapshot
        while len(self.live) > self.resident:
            self.live.popitem(last=False)  # its state holds it
        return detector

    def apply(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if not batch.num_rows:
            return []
        batch = mb.in_event_order(batch)  # the key's events in event-time order
        times = mb.event_times_us(batch)
        features = mb.features_numpy(batch).astype(np.float64)
        _, keys = mb.key_codes(batch)
        if len(keys) != 1:
            raise ValueError(f"a part holds one key's rows, got {len(keys)} keys")
        self.key = keys[0]
        scores, alarms = self._detector(self.key, features.shape[1]).block(times, features)
        carried = [c for c in mb.CARRIED if c in batch.schema.names]
        out = batch.select(carried)
        out = out.append_column(VALUE, pa.array(features[:, 0]))
        out = out.append_column(ANOMALY_SCORE, pa.array(scores))
        return [out.append_column(IS_ANOMALY, pa.array(alarms))]

    def snapshot(self) -> bytes:
        if self.key is None or self.key not in self.live:
            return self.state or b""
        token = os.urandom(TOKEN)
        detector = self.live[self.key][1]
        self.live[self.key] = (token, detector)
        return token + FORMAT + pickle.dumps(detector)


class DetectAnomalies(beam.PTransform):
    """Anomaly rows for micro-batches; see the module docstring. ``resident``: keys
    kept decoded in memory by a worker; ``forecast``: with the streaming
    Transformer's forecast residual among the detectors."""

    def __init__(self, resident: int = 1_000, forecast: bool = True) -> None:
        super().__init__()
        if resident < 1:
            raise ValueError(f"resident must be >= 1, got {resident!r}")
        self._resident, self._forecast = resident, forecast

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_AnomalyWorker, self._resident, self._forecast),
            at_first_event,  # (the output keeps the part's event times)
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
            split=mb.split_by_key,
        )
        return batches | "Detect" >> step
