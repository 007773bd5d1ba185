"""The scoring pipeline: source -> event-time windows -> PyTorch scoring -> sinks.

Writes under ``output``:

- ``predictions/``: one row per scored event (Parquet and JSONL);
- ``windows/``: one row per fired pane of the per-key window statistics (JSONL);
- ``dead_letter/``: malformed input rows and expired late events, with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import apache_beam as beam

from model.artifact import ModelArtifact
from model.mlp import fit
from model.streams.synthetic import warmup_sample
from pipelines.config import PipelineConfig, model_factory, read_source, write_outputs
from transforms.inference import StreamingInference
from transforms.io.replay import SourceOut
from transforms.window import EventTimeWindow, WindowStats


@dataclass(frozen=True)
class PipelineOutputs:
    """A pipeline's PCollections, for tests and for callers that add steps."""

    batches: beam.PCollection
    predictions: beam.PCollection
    windows: beam.PCollection | None  # (the anomaly pipeline has no window statistics)
    dead_letter: beam.PCollection
    source_events: int | None
    recount_events: Callable[[], int] | None = None  # the source's SourceOut.recount
    source_finished: Callable[[float], bool] | None = None  # the source's SourceOut.finished
    # whether live queries keep statistics per key (not where the keys are users)
    per_key_stats: bool = True

    @classmethod
    def without_windows(
        cls, source: SourceOut, predictions: beam.PCollection, *, per_key_stats: bool = True
    ) -> PipelineOutputs:
        """A pipeline with no window statistics (anomaly, recommend, federated)."""
        return cls(
            batches=source.batches,
            predictions=predictions,
            windows=None,
            dead_letter=source.dead_letter,
            source_events=source.events,
            recount_events=source.recount,
            source_finished=source.finished,
            per_key_stats=per_key_stats,
        )


def initial_model(cfg: PipelineConfig) -> ModelArtifact:
    """Version 0: the MLP warm-started on a sample disjoint from the stream (synthetic
    source) or left at its seeded initialisation (files)."""
    factory = model_factory(cfg)
    net = factory()
    if cfg.source == "synthetic" and cfg.warmup_events:
        x, y = warmup_sample(cfg.synthetic, cfg.warmup_events)
        fit(net, x, y, seed=cfg.seed)
    return ModelArtifact.from_module(net, 0, factory=factory)


def build(pipeline: beam.Pipeline, cfg: PipelineConfig) -> PipelineOutputs:
    """Add the scoring pipeline to ``pipeline``."""
    source = read_source(pipeline, cfg)
    windowed = source.batches | "Window" >> EventTimeWindow(cfg.window, cfg.trigger)
    scored = windowed.batches | "Score" >> StreamingInference(
        initial_model(cfg), device=cfg.device, memory=cfg.memory
    )
    stats = scored | "WindowStats" >> WindowStats()
    dead = (source.dead_letter, windowed.dropped) | "AllDeadLetters" >> beam.Flatten()
    write_outputs(cfg, scored, stats, dead)
    return PipelineOutputs(
        batches=source.batches,
        predictions=scored,
        windows=stats,
        dead_letter=dead,
        source_events=source.events,
        recount_events=source.recount,
        source_finished=source.finished,
    )
