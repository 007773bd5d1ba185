"""The recommend pipeline: interactions -> streaming matrix factorization -> sinks.

Each interaction (``timestamp``, ``user``, ``item``, optional ``rating``; from
``--input`` CSV files, or the synthetic drifting-tastes stream) gets its predicted
rating from the user and item embeddings as they were before it, which then learn
from its rating (:class:`transforms.reco.Recommend`). Writes under ``output``:

- ``predictions/``: ``key`` (the user), ``event_time``, ``event_id``, ``user``,
  ``item``, ``rating``, ``prediction``, ``model_version`` (Parquet and JSONL; and to
  ``--sink-topic``);
- ``dead_letter/``: rows that could not be read, with the reason.
"""

from __future__ import annotations

import apache_beam as beam

from pipelines.config import PipelineConfig, write_outputs
from pipelines.score import PipelineOutputs
from runners.direct import executes_test_stream_in_python
from transforms.reco import InteractionsSource, Recommend


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the recommend pipeline to ``pipeline``."""
    source = pipeline | "Source" >> InteractionsSource(
        list(cfg.inputs),
        cfg.reco.interactions,
        synthetic=cfg.reco.synthetic if cfg.source == "synthetic" else None,
        streaming=cfg.streaming,
        python_test_stream=executes_test_stream_in_python(pipeline.runner),
        watermark_interval_s=cfg.watermark_interval_s,
    )
    rows = source.batches | "Recommend" >> Recommend(cfg.reco.model)
    write_outputs(cfg, rows, None, source.dead_letter)
    # its keys are its users: no per-key statistics for live queries
    return PipelineOutputs.without_windows(source, rows, per_key_stats=False)
