"""The anomaly pipeline: source -> per-key streaming detectors -> sinks.

Every event is scored from its key's events before it (robust level and change
z-scores, a seasonal baseline, a streaming Transformer's forecast residual:
:mod:`model.anomaly.detectors`), then learnt; no labels are needed (a source's labels,
e.g. NAB's windows, are carried along for evaluation only). Writes under ``output``:

- ``predictions/``: one row per event: ``key``, ``event_time``, ``event_id``,
  ``label`` (when known), ``value``, ``anomaly_score`` (0..1), ``is_anomaly``
  (Parquet and JSONL; and to ``--sink-topic``);
- ``dead_letter/``: malformed input rows, with the reason.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.config import PipelineConfig, read_source, write_outputs
from pipelines.score import PipelineOutputs
from transforms.anomaly import DetectAnomalies


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the anomaly pipeline to ``pipeline``."""
    source = read_source(pipeline, cfg)
    rows = source.batches | "Anomalies" >> DetectAnomalies()
    write_outputs(cfg, rows, None, source.dead_letter)
    return PipelineOutputs.without_windows(source, rows)
