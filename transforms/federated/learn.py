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
keeps it decoded (:class:`transforms.online.sequential.LiveStateWorker`).
Metrics: ``federated_rounds``, ``federated_bytes`` (updates sent) and
``federated_epsilon_milli`` (the privacy spent, x1000, its maximum).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.federated.rounds import FederatedConfig, Federation
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
from transforms.online.sequential import LiveStateWorker, Sequential, at_first_event

ROUND = "round"


@dataclass
class _Live:
    """The federation and the round (window index) in progress."""

    federation: Federation
    current: int | None = None


class _FederatedWorker(LiveStateWorker):
    def __init__(self, config: FederatedConfig, round_us: int, step: str) -> None:
        super().__init__(step)
        self.config, self.round_us = config, round_us
        m = beam.metrics.Metrics
        self.rounds = m.counter(NAMESPACE, Metric.FEDERATED_ROUNDS)
        self.bytes = m.counter(NAMESPACE, Metric.FEDERATED_BYTES)
        self.epsilon = m.distribution(NAMESPACE, Metric.FEDERATED_EPSILON_MILLI)

    def fresh(self) -> _Live:
        return _Live(Federation(self.config))

    def decode(self, state: Any) -> _Live:
        live = self.fresh()
        live.federation.restore(state["federation"])
        live.current = state["current"]
        return live

    def encode(self) -> Any:
        return {"federation": self.live.federation.snapshot(), "current": self.live.current}

    def work(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        live: _Live = self.live
        if not batch.num_rows:
            return []
        batch = mb.in_event_order(batch)
        labels = mb.labels_numpy(batch)
        if labels is None:
            raise ValueError("federated learning needs labelled events (a label column)")
        rounds = mb.event_times_us(batch) // self.round_us
        x = mb.features_numpy(batch).astype(np.float64)
        keys = batch.column(KEY).to_numpy(zero_copy_only=False).astype(str)
        prediction = np.empty(len(labels), np.int64)
        version = np.empty(len(labels), np.int64)
        # an event of a round already closed is learnt in the current one, and says so
        if live.current is not None:
            rounds = np.maximum(rounds, live.current)
        for r in np.unique(rounds).tolist():
            self._advance(live, int(r))
            rows = rounds == r
            version[rows] = live.federation.version
            prediction[rows] = live.federation.learn(keys[rows], x[rows], labels[rows])
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

    def _advance(self, live: _Live, to: int) -> None:
        """Close the round in progress when an event of a later window arrived."""
        if live.current is not None and to > live.current:
            report = live.federation.end_round()
            self.rounds.inc()
            if report.bytes_sent:
                self.bytes.inc(report.bytes_sent)
            if report.epsilon is not None:
                self.epsilon.update(round(report.epsilon * 1000))
        if live.current is None or to > live.current:
            live.current = to


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
            at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Federate" >> step
