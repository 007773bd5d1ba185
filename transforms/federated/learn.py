"""Federated learning over micro-batches, the federation's state in Beam state.

``batches | FederatedLearning(config, round_s)`` gives, for every labelled event, a
row with ``key`` (the device), ``event_time``, ``event_id``, ``label``,
``prediction`` (by the device's model before the event; then the device learns it),
``model_version`` (the global version the device started its round from) and
``round``. A round is an event-time window of ``round_s`` seconds: when the stream
moves into a later window, the round ends (:meth:`model.federated.rounds.Federation.end_round`):
the devices' deltas, never their events, go to the aggregator, and every device
starts the next round from the new global model. A round closes when the first
event of a later window arrives (the last round of a bounded input stays open); an
event of a round already closed is learnt in the current one, whose number its row
carries.

The federation is one state key's state (:class:`transforms.online.sequential.Sequential`):
live, batches in arrival order; bounded, in event-time order, so the DirectRunner and
Flink give the same answer; within a batch, events in event-time order. The process
keeps it decoded (``PROCESS_CACHE``) while the state is the one it last wrote.
Metrics: ``federated_rounds``, ``federated_bytes`` (updates sent) and
``federated_epsilon_milli`` (the privacy spent, x1000, its maximum).
"""

from __future__ import annotations

import functools
import os
import pickle
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.federated.rounds import FederatedConfig, Federation
from model.process_cache import PROCESS_CACHE
from model.vocabulary import (
    EVENT_ID,
    EVENT_TIME,
    KEY,
    LABEL,
    MODEL_VERSION,
    NAMESPACE,
    PREDICTION,
    Metric,
)
from transforms.online.sequential import Sequential

TOKEN = 16
ROUND = "round"


class _FederatedWorker:
    def __init__(self, config: FederatedConfig, round_us: int, step: str) -> None:
        self.config, self.round_us, self.step = config, round_us, step
        self.fed: Federation | None = None
        self.current: int | None = None  # the round in progress
        self.token = b""
        self.state: bytes | None = None
        m = beam.metrics.Metrics
        self.rounds = m.counter(NAMESPACE, Metric.FEDERATED_ROUNDS)
        self.bytes = m.counter(NAMESPACE, Metric.FEDERATED_BYTES)
        self.epsilon = m.distribution(NAMESPACE, Metric.FEDERATED_EPSILON_MILLI)

    def restore(self, data: bytes | None) -> None:
        self.state = data
        current = b"" if data is None else data[:TOKEN]
        live = PROCESS_CACHE.take("learner", (self.step, "federation"))
        if live is not None and live[0] == current:
            self.token, self.fed, self.current = live
            return
        self.fed, self.current = Federation(self.config), None
        if data is not None:
            state = pickle.loads(data[TOKEN:])
            self.fed.restore(state["federation"])
            self.current = state["current"]
        self.token = current

    def apply(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if self.fed is None:
            self.restore(self.state)
        assert self.fed is not None
        if not batch.num_rows:
            return []
        times = mb.event_times_us(batch)
        ids = batch.column(EVENT_ID).to_numpy(zero_copy_only=False)
        order = np.lexsort((ids, times))
        batch, times = batch.take(pa.array(order)), times[order]
        labels = mb.labels_numpy(batch)
        if labels is None:
            raise ValueError("federated learning needs labelled events (a label column)")
        rounds = times // self.round_us
        x = mb.features_numpy(batch).astype(np.float64)
        keys = batch.column(KEY).to_numpy(zero_copy_only=False).astype(str)
        prediction = np.empty(len(labels), np.int64)
        version = np.empty(len(labels), np.int64)
        # an event of a round already closed is learnt in the current one, and says so
        if self.current is not None:
            rounds = np.maximum(rounds, self.current)
        for r in np.unique(rounds).tolist():
            self._advance(int(r))
            rows = rounds == r
            version[rows] = self.fed.version
            prediction[rows] = self.fed.learn(keys[rows], x[rows], labels[rows])
        self.token = b""
        return [
            pa.RecordBatch.from_arrays(
                [
                    batch.column(KEY),
                    batch.column(EVENT_TIME),
                    batch.column(EVENT_ID),
                    batch.column(LABEL),
                    pa.array(prediction),
                    pa.array(version),
                    pa.array(rounds),
                ],
                names=[KEY, EVENT_TIME, EVENT_ID, LABEL, PREDICTION, MODEL_VERSION, ROUND],
            )  # fmt: skip
        ]

    def _advance(self, to: int) -> None:
        """Close the rounds before ``to`` (an event of a later window arrived)."""
        assert self.fed is not None
        if self.current is not None and to > self.current:
            report = self.fed.end_round()
            self.rounds.inc()
            if report.bytes_sent:
                self.bytes.inc(report.bytes_sent)
            if report.epsilon is not None:
                self.epsilon.update(round(report.epsilon * 1000))
        if self.current is None or to > self.current:
            self.current = to

    def snapshot(self) -> bytes:
        assert self.fed is not None
        self.token = os.urandom(TOKEN)
        PROCESS_CACHE.put("learner", (self.step, "federation"),
                          (self.token, self.fed, self.current))  # fmt: skip
        state = {"federation": self.fed.snapshot(), "current": self.current}
        return self.token + pickle.dumps(state, protocol=5)


def _at_first_event(out: pa.RecordBatch, batch: Any) -> int:
    return mb.min_event_time_us(out)


class FederatedLearning(beam.PTransform):
    """Per-device predictions and federated rounds (module docstring)."""

    def __init__(self, config: FederatedConfig, round_s: float) -> None:
        super().__init__()
        if round_s <= 0:
            msg = f"a round must last > 0 seconds, got {round_s!r}"
            raise ValueError(msg)
        self._config, self._round_us = config, round(round_s * mb.US_PER_SECOND)
        self._step = uuid.uuid4().hex  # survives pickling: names this step's federation

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_FederatedWorker, self._config, self._round_us, self._step),
            _at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Federate" >> step
