"""Coupled online learning: predict each batch with the current model, then learn it.

:class:`PrequentialLearner` runs one stateful step per model key (one model for the
stream, or one per event key) that buffers fixed-windowed micro-batches, works
through each window's batches in event-time order when the watermark passes its end
and predicts every step before learning it: every event is scored by a model that
has seen every earlier event (at step granularity) and nothing later. Window size and
allowed lateness come from the input's windowing; a batch that arrives after its
window was done is scored by the model as it was when that window began.

Outputs (:class:`PrequentialOut`): the prediction rows, stamped 1 ms before the end
of their window so they stay in it; the model versions (one per window with labelled
data, and every ``emit_every_samples``); and the prequential statistics of each
window (rows like :class:`transforms.window.WindowStats` makes, pane ``ON_TIME``, or
``LATE`` for late batches). The step emits its own statistics because the legacy
streaming DirectRunner does not hold the watermark for user timers, so a GroupByKey
after it could see these predictions as late.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
from torch import nn

from model.artifact import ModelArtifact
from model.online.config import OnlineConfig
from model.online.step import PrequentialStep
from transforms.io import coders as _coders  # noqa: F401  (registers the artifact coder)
from transforms.online.step import OnlineStepDoFn, fixed_windows, keyed_by_model, window_grid


@dataclass(frozen=True)
class PrequentialOut:
    """``predictions``: scored batches in their fixed windows; ``updates``: model
    versions (``ModelArtifact``, or ``(key, ModelArtifact)`` per key), in the global
    window; ``stats``: batches of rows, one per key, window and pane."""

    predictions: beam.PCollection
    updates: beam.PCollection
    stats: beam.PCollection


class PrequentialLearner(beam.PTransform):
    """Windowed labelled batches in, predictions (each scored before it was learned)
    out; see the module docstring.

    >>> from model.mlp import MLPClassifier
    >>> learner = PrequentialLearner(functools.partial(MLPClassifier, 2, seed=0), per_key=True)
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        config: OnlineConfig | None = None,
        *,
        per_key: bool = False,
    ) -> None:
        super().__init__()
        self._factory = factory
        self._config = config or OnlineConfig()
        self._per_key = per_key

    def expand(self, batches: beam.PCollection) -> PrequentialOut:
        grid = window_grid(batches)
        make = functools.partial(PrequentialStep, self._factory, self._config, grid)
        step = OnlineStepDoFn(
            make, per_key=self._per_key, updates_tag="updates", drain=batches.is_bounded
        )
        update_type: Any = tuple[str, ModelArtifact] if self._per_key else ModelArtifact
        out = keyed_by_model(batches, self._per_key) | "PredictThenLearn" >> beam.ParDo(
            step
        ).with_output_types(pa.RecordBatch, updates=update_type, stats=pa.RecordBatch).with_outputs(
            "updates", "stats", main="predictions"
        )
        predictions = out.predictions | "PredictionWindows" >> beam.WindowInto(fixed_windows(grid))
        return PrequentialOut(predictions=predictions, updates=out.updates, stats=out.stats)
