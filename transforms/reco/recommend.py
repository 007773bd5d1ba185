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
decoded (:class:`transforms.online.sequential.LiveStateWorker`) while the state is
the one it last wrote, else rebuilds it from the state. Within a batch, events go in
event-time order. The live model is also on this process's board
(:data:`model.live.BOARD`, name ``recommend``) with the newest event time it learnt,
for live queries (:mod:`pipelines.serve`).
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.live import BOARD
from model.reco.events import ITEM, RATING, USER
from model.reco.mf import MFConfig, StreamingMF
from model.vocabulary import EVENT_ID, EVENT_TIME, KEY, MODEL_VERSION, PREDICTION
from transforms.online.sequential import LiveStateWorker, Sequential, at_first_event

LIVE_NAME = "recommend"  # the live model's name on this process's board (model.live)


class _RecommendWorker(LiveStateWorker):
    def __init__(self, config: MFConfig, step: str) -> None:
        super().__init__(step)
        self.config = config

    def fresh(self) -> StreamingMF:
        return StreamingMF(self.config)

    def decode(self, state: Any) -> StreamingMF:
        model = StreamingMF(self.config)
        model.restore(state)
        return model

    def encode(self) -> Any:
        # (queries only read the model: this thread, its one writer, needs no lock)
        return self.live.snapshot()

    def work(self, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
        model: StreamingMF = self.live
        if not batch.num_rows:
            return []
        batch = mb.in_event_order(batch)
        ratings = batch.column(RATING).to_numpy(zero_copy_only=False)
        entry = BOARD.get(LIVE_NAME)
        if entry is None or entry.value is not model:  # queries read this model
            entry = BOARD.publish(LIVE_NAME, model, version=model.rated)
        before = model.rated
        with entry.lock:
            predictions = model.predict_learn(batch.column(USER), batch.column(ITEM), ratings)
        BOARD.advance(LIVE_NAME, int(mb.event_times_us(batch).max()), version=model.rated)
        versions = before + np.concatenate([[0], np.cumsum(~np.isnan(ratings))[:-1]])
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


class Recommend(beam.PTransform):
    """Prequential rating predictions for interaction batches (module docstring)."""

    def __init__(self, config: MFConfig | None = None) -> None:
        super().__init__()
        self._config = config or MFConfig()
        self._step = uuid.uuid4().hex  # survives pickling: names this step's live model

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        step = Sequential(
            functools.partial(_RecommendWorker, self._config, self._step),
            at_first_event,
            element_type=pa.RecordBatch,
            output_type=pa.RecordBatch,
        )
        return batches | "Factorize" >> step
