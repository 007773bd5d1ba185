"""The classify pipeline: learn from the stream while scoring it (prequential).

source -> event-time windows -> :class:`transforms.online.OnlineClassifier`
(decoupled: trainer + scorer with a windowed side input of model versions; coupled:
one predict-then-learn step per model key) -> sinks. Besides what the score pipeline
writes, every published model version is saved to ``<output>/models/`` (a
:class:`transforms.io.ModelStore`), and the drift alarms of every key's prequential
error to ``<output>/drift/`` (:class:`transforms.online.DetectDrift`), and how far
each window's feature distributions moved from the previous window's to
``<output>/feature_drift/`` (tfx-bsl sketches:
:class:`~transforms.window.feature_drift.FeatureDrift`).
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from model.artifact import ModelArtifact
from model.process_cache import LRU
from model.vocabulary import Metric
from pipelines.config import PipelineConfig, model_factory, read_source, write_outputs
from pipelines.score import PipelineOutputs
from transforms.io import ModelStore, WriteRecords
from transforms.online import DetectDrift, LagLabels, OnlineClassifier
from transforms.window import EventTimeWindow
from transforms.window.feature_drift import FeatureDrift

_REMEMBERED = 4096  # (key, version) pairs a saver remembers having saved


class _SaveVersions(beam.DoFn):
    """Saves each published version once (updates are repeated for later windows:
    the versions this worker saved are remembered, so a repeat costs no file check).
    Per-key models (``(key, artifact)`` updates): one store folder per key,
    ``key=<the key, percent-encoded>``, so any key (the empty one too) has its own."""

    def __init__(self, root: str) -> None:
        self._root = root

    def setup(self) -> None:
        self._store = ModelStore(self._root)
        self._saved: LRU[tuple[str | None, int], bool] = LRU(_REMEMBERED)

    def process(self, update: Any) -> Iterator[None]:
        artifact: ModelArtifact = update[1] if isinstance(update, tuple) else update
        seen = (update[0] if isinstance(update, tuple) else None, artifact.version)
        if self._saved.get(seen):
            return iter(())
        self._saved.put(seen, True)
        if isinstance(update, tuple):
            folder = "key=" + urllib.parse.quote(update[0], safe="")
            store = ModelStore(os.path.join(self._root, folder))
        else:
            store = self._store
        try:
            store.save(artifact)
        except FileExistsError:
            pass
        return iter(())


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the classify pipeline to ``pipeline``."""
    source = read_source(pipeline, cfg)
    batches = source.batches
    if cfg.lags_labels:
        batches = batches | "LagLabels" >> LagLabels(cfg.num_classes)
    windowed = batches | "Window" >> EventTimeWindow(cfg.window, cfg.trigger)
    online = windowed.batches | "Online" >> OnlineClassifier(
        model_factory(cfg), cfg.online, mode=cfg.mode, per_key=cfg.per_key, device=cfg.device
    )
    _ = online.updates | "SaveVersions" >> beam.ParDo(
        _SaveVersions(os.path.join(cfg.output, "models"))
    )
    if cfg.feature_drift:
        shifts = windowed.batches | "FeatureDrift" >> FeatureDrift(cfg.window)
        _ = shifts | "WriteFeatureDrift" >> WriteRecords(
            os.path.join(cfg.output, "feature_drift"), counter=Metric.FEATURE_DRIFT
        )
    if cfg.detects_drift:
        alarms = online.predictions | "DetectDrift" >> DetectDrift(cfg.window, cfg.drift_detector)
        _ = alarms | "WriteDrift" >> WriteRecords(
            os.path.join(cfg.output, "drift"), counter=Metric.DRIFT_ALARMS
        )
    dead = (source.dead_letter, windowed.dropped) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(cfg, online.predictions, online.stats, dead)
    return PipelineOutputs(
        batches=source.batches,
        predictions=online.predictions,
        windows=online.stats,
        dead_letter=dead,
        source_events=source.events,
    )
