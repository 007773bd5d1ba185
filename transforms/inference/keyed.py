"""Keyed inference: each row is scored by the model of its key (e.g. its tenant).

Models load lazily on first use and at most ``max_resident`` stay in memory (least
recently used evicted, :class:`model.keyed.ModelCache`). Output rows are those of
:func:`model.batch.scored_batch` plus ``model`` (the model key); row order, timestamps
and windows are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import torch

from model import batch as mb
from model.artifact import ModelArtifact
from model.keyed import ModelCache
from model.vocabulary import MODEL, NAMESPACE, Metric


def _identity(key: str) -> str:
    return key


class _KeyedInferenceDoFn(beam.DoFn):
    def __init__(
        self,
        loader: Callable[[str], ModelArtifact],
        model_key: Callable[[str], str],
        max_resident: int,
        device: str,
    ) -> None:
        self._loader = loader
        self._model_key = model_key
        self._max = max_resident
        self._device = device

    def setup(self) -> None:
        self._cache = ModelCache(self._loader, max_resident=self._max, device=self._device)
        self._loads = beam.metrics.Metrics.counter(NAMESPACE, Metric.MODEL_LOADS)
        self._evictions = beam.metrics.Metrics.counter(NAMESPACE, Metric.MODEL_EVICTIONS)
        self._rows = beam.metrics.Metrics.counter(NAMESPACE, Metric.ROWS_SCORED)

    def process(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        loads, evictions = self._cache.loads, self._cache.evictions
        codes, keys = mb.key_codes(batch)
        # Distinct model keys, and for each event key the index of its model key:
        # every per-row step below is a vectorized lookup, never a Python loop.
        index: dict[str, int] = {}
        model_of_key = np.fromiter(
            (index.setdefault(self._model_key(k), len(index)) for k in keys), np.int32, len(keys)
        )
        models = list(index)
        row_model = model_of_key[codes]
        order, bounds = mb.group_bounds(row_model, len(models))
        features = mb.features_tensor(batch)
        n = batch.num_rows
        pred, score = np.empty(n, np.int64), np.empty(n, np.float32)
        version = np.empty(n, np.int64)
        for m, mk in enumerate(models):
            rows = order[bounds[m] : bounds[m + 1]]
            handler = self._cache.get(mk)
            p, s = handler.predict(features[torch.from_numpy(rows)])
            pred[rows], score[rows], version[rows] = p, s, handler.version
        self._loads.inc(self._cache.loads - loads)
        self._evictions.inc(self._cache.evictions - evictions)
        self._rows.inc(n)
        out = mb.scored_batch(batch, pred, score, version)
        model_column = pa.DictionaryArray.from_arrays(pa.array(row_model), pa.array(models))
        yield out.append_column(MODEL, model_column.cast(pa.string()))


class KeyedInference(beam.PTransform):
    """Score each row with the model of ``model_key(row.key)`` (default: the key itself).

    ``loader(model_key)`` returns the :class:`ModelArtifact` to load; it runs on the
    workers, lazily, whenever a model is not resident.
    """

    def __init__(
        self,
        loader: Callable[[str], ModelArtifact],
        *,
        model_key: Callable[[str], str] = _identity,
        max_resident: int = 4,
        device: str = "auto",
    ) -> None:
        super().__init__()
        if max_resident <= 0:
            msg = f"max_resident must be > 0, got {max_resident!r}"
            raise ValueError(msg)
        self._fn = _KeyedInferenceDoFn(loader, model_key, max_resident, device)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "KeyedInfer" >> beam.ParDo(self._fn).with_output_types(pa.RecordBatch)
