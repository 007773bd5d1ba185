"""Scoring micro-batches inside a pipeline (a first step; the full handler comes later).

Each output row is one scored event: ``key``, ``event_time``, ``event_id`` and
``label`` when present, ``prediction``, ``score`` (probability of the predicted
class) and ``model_version``. Element timestamps and windows are kept: the DoFn
returns the scored batch in the input's place.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.scorer import BatchScorer, ModelArtifact
from transforms.lateness import NAMESPACE

PREDICTION = "prediction"
SCORE = "score"
MODEL_VERSION = "model_version"
CARRIED = (mb.KEY, mb.EVENT_TIME, mb.EVENT_ID, mb.LABEL)


def scored_batch(
    batch: pa.RecordBatch, prediction: np.ndarray, score: np.ndarray, version: int
) -> pa.RecordBatch:
    """The prediction rows for ``batch``: carried columns plus the model's outputs."""
    names = [c for c in CARRIED if c in batch.schema.names]
    arrays = [batch.column(c) for c in names]
    arrays += [
        pa.array(prediction, type=pa.int64()),
        pa.array(score, type=pa.float32()),
        pa.array(np.full(batch.num_rows, version, dtype=np.int64)),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[*names, PREDICTION, SCORE, MODEL_VERSION])


class _ScoreDoFn(beam.DoFn):
    def __init__(self, artifact: ModelArtifact, device: str) -> None:
        self._artifact = artifact
        self._device = device
        self._rows = beam.metrics.Metrics.counter(NAMESPACE, "rows_scored")
        self._scorer: BatchScorer | None = None

    def setup(self) -> None:
        self._scorer = BatchScorer(self._artifact, self._device)

    def process(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        assert self._scorer is not None
        prediction, score = self._scorer.score(mb.features_tensor(batch))
        self._rows.inc(batch.num_rows)
        yield scored_batch(batch, prediction, score, self._scorer.version)


class ScoreBatches(beam.PTransform):
    """Score every micro-batch with one model version.

    >>> from model.mlp import MLPClassifier
    >>> art = ModelArtifact.from_module(MLPClassifier(8, seed=0), version=0)
    >>> step = ScoreBatches(art, device="cpu")
    """

    def __init__(self, artifact: ModelArtifact, *, device: str = "auto") -> None:
        super().__init__()
        self._artifact = artifact
        self._device = device

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Score" >> beam.ParDo(
            _ScoreDoFn(self._artifact, self._device)
        ).with_output_types(pa.RecordBatch)
