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
import pyarrow as pa

from model import batch as mb
from model.artifact import ModelArtifact
from model.process_cache import LRU
from model.vocabulary import Metric
from pipelines.config import PipelineConfig, model_factory, read_source, write_outputs
from pipelines.score import PipelineOutputs
from transforms.io import ModelStore, WriteBatches, WriteRecords
from transforms.online import DetectDrift, JoinLabels, LagLabels, OnlineClassifier
from transforms.online.labels import SplitLabels
from transforms.window import EventTimeWindow, TriggerSpec, WindowStats
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


def _join(labels: beam.PCollection, cfg: PipelineConfig, horizon_s: float) -> JoinLabels:
    # waiting rows expire frame by frame (a timer per frame, not per window)
    frame_s = cfg.window.size_s * cfg.window.frame
    return JoinLabels(
        labels,
        window_s=frame_s,
        allowed_lateness_s=horizon_s,
        offset_s=cfg.window.offset_s,
        timely=cfg.unbounded,  # bounded: every row waits to the end, one timer
    )


def _evaluated(batch: pa.RecordBatch) -> pa.RecordBatch:
    # joined when its label came, long after the source's watermark passed it: to be
    # windowed by its event time, not judged late again (and counted as a prediction)
    if mb.LABEL_TIME in batch.schema.names:
        batch = batch.drop_columns([mb.LABEL_TIME])
    return batch.replace_schema_metadata(None)


def _evaluate(
    predictions: beam.PCollection,
    labels: beam.PCollection,
    rejected: beam.PCollection | None,
    cfg: PipelineConfig,
) -> beam.PCollection:
    """Prequential accuracy on delayed labels: each prediction joined (by ``event_id``)
    to its label when that comes, windowed by its event time again, and counted per
    window into ``<output>/evaluation/``; predictions whose label never came into
    ``<output>/unlabelled/``, labels that found no prediction (or, ``rejected``, that
    could not be read) into ``<output>/label_dead_letter/``. Returns the windowed,
    labelled predictions."""
    horizon_s = cfg.label_horizon_s
    joined = predictions | "JoinEvaluationLabels" >> _join(labels, cfg, horizon_s)
    # the panes of labels that come late fire late: allowed for the label horizon, and
    # two frames more for the time the join takes to hand them on
    frame_s = cfg.window.size_s * cfg.window.frame
    late = TriggerSpec(allowed_lateness_s=horizon_s + 2 * frame_s)
    evaluated = (
        joined.labelled
        | "EvaluatedInEventTime" >> beam.Map(_evaluated)
        | "EvaluationWindow" >> EventTimeWindow(cfg.window, late)
    )
    out = cfg.output
    stats = evaluated.batches | "EvaluationStats" >> WindowStats()
    _ = stats | "WriteEvaluation" >> WriteBatches(
        os.path.join(out, "evaluation"), counter=Metric.EVALUATED_PANES, formats=("jsonl",)
    )
    _ = joined.unlabelled | "WriteUnlabelled" >> WriteRecords(
        os.path.join(out, "unlabelled"), counter=Metric.EVENTS_UNLABELLED
    )
    dead = joined.dead_letter
    if rejected is not None:
        dead = (dead, rejected) | "AllLabelDeadLetters" >> beam.Flatten()
    _ = dead | "WriteLabelDeadLetters" >> WriteRecords(
        os.path.join(out, "label_dead_letter"), counter=Metric.LABELS_REJECTED
    )
    return evaluated.batches


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the classify pipeline to ``pipeline``."""
    source = read_source(pipeline, cfg)
    batches = source.batches
    labels = None
    if cfg.delays_labels:  # scored without their labels; joined to them later
        split = batches | "SplitLabels" >> SplitLabels(cfg.label_delay_s)
        batches, labels = split.events, split.labels
    events = batches
    if cfg.lags_labels:
        batches = batches | "LagLabels" >> LagLabels(cfg.num_classes)
    windowed = batches | "Window" >> EventTimeWindow(cfg.window, cfg.trigger)
    training = None
    if labels is not None:
        joined = windowed.batches | "JoinTrainingLabels" >> _join(labels, cfg, cfg.label_horizon_s)
        # learned when the label is known, not before: a window's version learns the
        # labels that came during the window (scores the next one), as live
        training = joined.labelled | "LearnWhenKnown" >> beam.Map(mb.at_label_time)
    online = windowed.batches | "Online" >> OnlineClassifier(
        model_factory(cfg),
        cfg.online,
        mode=cfg.mode,
        per_key=cfg.per_key,
        device=cfg.device,
        labelled=training,
    )
    judged = online.predictions  # scored rows with their labels: what drift is watched on
    if labels is not None:
        judged = _evaluate(online.predictions, labels, source.label_dead_letter, cfg)
    _ = online.updates | "SaveVersions" >> beam.ParDo(
        _SaveVersions(os.path.join(cfg.output, "models"))
    )
    if cfg.feature_drift:
        shifts = windowed.batches | "FeatureDrift" >> FeatureDrift(cfg.window)
        _ = shifts | "WriteFeatureDrift" >> WriteRecords(
            os.path.join(cfg.output, "feature_drift"), counter=Metric.FEATURE_DRIFT
        )
    if cfg.detects_drift:
        alarms = judged | "DetectDrift" >> DetectDrift(cfg.window, cfg.drift_detector)
        _ = alarms | "WriteDrift" >> WriteRecords(
            os.path.join(cfg.output, "drift"), counter=Metric.DRIFT_ALARMS
        )
    dead = (source.dead_letter, windowed.dropped) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(cfg, online.predictions, online.stats, dead)
    return PipelineOutputs(
        batches=events,
        predictions=online.predictions,
        windows=online.stats,
        dead_letter=dead,
        source_events=source.events,
        recount_events=source.recount,
        source_finished=source.finished,
    )
