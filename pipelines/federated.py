"""The federated pipeline: devices -> per-device learning, rounds by window -> sinks.

Each key is a device; each event gets its ``prediction`` from the device's model
before it, then the device learns it; at the end of each event-time window (a
round) devices send model deltas, never events, to the aggregator, and start the
next round from the new global model (:class:`transforms.federated.FederatedLearning`).
Input: ``--input`` CSV files with a key, a label (0/1) and numeric features, or the
synthetic non-IID device stream. Writes under ``output``:

- ``predictions/``: ``key``, ``event_time``, ``event_id``, ``label``, ``prediction``,
  ``model_version`` (the global version of the device's round), ``round``;
- ``dead_letter/``: malformed input rows, with the reason.
"""

from __future__ import annotations

import functools

import apache_beam as beam

from model.streams.devices import device_batches
from pipelines.config import PipelineConfig, read_source, write_outputs
from pipelines.score import PipelineOutputs
from runners.direct import executes_test_stream_in_python
from transforms.federated import FederatedLearning
from transforms.io.chunk_source import ChunkSource


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the federated pipeline to ``pipeline``."""
    assert cfg.federated is not None
    if cfg.source == "synthetic":
        source = pipeline | "Source" >> ChunkSource(
            functools.partial(device_batches, cfg.devices),
            streaming=cfg.streaming,
            python_test_stream=executes_test_stream_in_python(pipeline.runner),
            watermark_interval_s=cfg.watermark_interval_s,
            label="Devices",
        )
    else:
        source = read_source(pipeline, cfg)
    rows = source.batches | "Federated" >> FederatedLearning(cfg.federated, cfg.window.size_s)
    write_outputs(cfg, rows, None, source.dead_letter)
    return PipelineOutputs.without_windows(source, rows)
