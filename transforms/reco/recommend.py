"""Streaming matrix factorization over interaction micro-batches, its model in Beam state.

``batches | Recommend(config)`` gives, for every interaction, a row with ``key``
(the user), ``event_time``, ``event_id``, ``user``, ``item``, ``rating``,
``prediction`` and ``model_version``: the prediction from the embeddings as they
were before the event (:class:`model.reco.mf.StreamingMF`), which then learn from it.
``model_version`` is how many of the events' ratings the model had learned when it
predicted (sampled negatives not counted). The live position is the newest event
time learnt (arrival order: with out-of-order input, not a watermark).

The model is one state key's state (:class:`transforms.online.sequential.Sequential`):
live, the batches in arrival order (what was known when), the model checkpointed
with the key's state (on Flink, restored with it); bounded, every batch in event-time
order, so every runner gives the same answer. The process keeps the step's model
decoded (:data:`model.process_cache.PROCESS_CACHE`, kind ``learner``: a runner may set
up a fresh DoFn per bundle) and uses it while the state is the one it last wrote (a
random token says so), else rebuilds it from the state. Within a batch, events go in
event-time order. The live model is also on this process's board
(:data:`model.live.BOARD`, name ``recommend``) with the newest event time it learnt,
for live queries (:mod:`pipelines.serve`).
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
from model.live import BOARD
from model.process_cache import PROCESS_CACHE
from model.reco.events import ITEM, RATING, USER
from model.reco.mf import MFConfig, StreamingMF
from model.vocabulary import EVENT_ID, EVENT_TIME, KEY, MODEL_VERSION, PREDICTION
from transforms.online.sequential import Sequential

TOKEN = 16  # bytes of the token that starts the state
LIVE_NAME = "recommend"  # the live model's name on this process's board (model.live)


class _RecommendWorker:
    def __init__(self, config: MFConfig, step: str) -> None:
        self.config, self.step = config, step
        self.model: StreamingMF | None = None
        self.token = b""
        self.state: bytes | None = None

    def restore(self, data: bytes | None) -> None:
        self.state = data
        current = b"" if data is None else data[:TOKEN]
        live = PROCESS_CACHE.take("learner", (self.step, "reco"))
        if live is not None and live[0] == current:
            self.token, self.model = live  # what this process wrote last: that state
            return
        self.model = StreamingMF(self.config)
        if data is not None:
            self.model.restore(pickle.loads(data[TOKEN:]))
            REBUILT[self.step] = REBUILT.get(self.step, 0) + 1
        self.token = current

    def apply(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        if self.model is None:
            self.restore(self.state)
        assert self.model is not None
        if not batch.num_rows:
            return []
        times = mb.event_times_us(batch)
        ids = batch.column(EVENT_ID).to_numpy(zero_copy_only=False)
        batch = batch.take(pa.array(np.lexsort((ids, times))))
        ratings = batch.column(RATING).to_numpy(zero_copy_only=False)
        entry = BOARD.get(LIVE_NAME)
        if entry is None or entry.value is not self.model:  # queries read this model
            entry = BOARD.publish(LIVE_NAME, self.model, version=self.model.rated)
        before = self.model.rated
        with entry.lock:
            predictions = self.model.predict_learn(batch.column(USER), batch.column(ITEM), ratings)
        BOARD.advance(LIVE_NAME, int(times.max()), version=self.model.rated)
        versions = before + np.concatenate([[0], np.cumsum(~np.isnan(ratings))[:-1]])
        self.token = b""  # changed: not the state any more until written
        return [
            pa.RecordBatch.from_arrays(
                [
                    batch.column(KEY),
                    batch.column(EVENT_TIME),
                    batch.column(EVENT_ID),
                    batch.column(USER),
                    batch.column(ITEM),
                    batch.column(RATING),
                    pa.array(predictions, pa.float32()),
                    pa.array(versions, pa.int64()),
                ],
                names=[KEY, EVENT_TIME, EVENT_ID, USER, ITEM, RATING, PREDICTION, MODEL_VERSION],
            )  # fmt: skip
        ]

    def snapshot(self) -> bytes:
        assert self.model is not None
        self.token = os.urandom(TOKEN)
        PROCESS_CACHE.put("learner", (self.step, "reco"), (self.token, self.model))
        # (queries only read the model: this thread, its one writer, needs no lock here)
        return self.token + pickle.dumps(self.model.snapshot(), protocol=5)


REBUILT: dict[str, int] = {}  # models decoded from state, per step (for tests)


def _at_first_event(out: pa.RecordBatch, batch: Any) -> int:
    return mb.min_event_time_us(out)


class Recommend(beam.PTransform):
    """Prequential rating predictions for interaction batches (module docstring)."""

    def __init__(self, config: MFConfig | None = None) -> None:
        super().__init__()
        self._config = config or MFConfig()
        self._step = uuid.uuid4().hex  # survives pickling: names this step's live model

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_RecommendWorker, self._config, self._step),
            _at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Factorize" >> step
