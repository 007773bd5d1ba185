"""The scoring pipeline: source -> event-time windows -> PyTorch scoring -> sinks.

Writes under ``output``:

- ``predictions/``: one row per scored event (Parquet and JSONL);
- ``windows/``: one row per fired pane of the per-key window statistics (JSONL);
- ``dead_letter/``: malformed input rows and expired late events, with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

import apache_beam as beam

from model.artifact import ModelArtifact
from model.mlp import MLPClassifier, fit
from transforms.csv_parse import CsvFormat
from transforms.inference import StreamingInference
from transforms.sinks import WriteBatches, WriteRecords
from transforms.sources import CsvSource, SourceOut, SyntheticSource
from transforms.synthetic import SyntheticConfig, warmup_sample
from transforms.window_stats import WindowStats
from transforms.windowing import EventTimeWindow, TriggerSpec, WindowSpec

SourceKind = Literal["synthetic", "csv", "nab"]


@dataclass(frozen=True)
class ScoreConfig:
    """Everything the scoring pipeline needs; validated on construction."""

    output: str
    source: SourceKind = "synthetic"
    inputs: tuple[str, ...] = ()
    label_column: str | None = None
    time_column: str = "timestamp"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    window: WindowSpec = field(default_factory=WindowSpec)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    streaming: bool = False
    watermark_lag_s: float = 0.0
    processing_time_per_chunk_s: float | None = None
    device: str = "auto"
    hidden: tuple[int, ...] = (32,)
    warmup_events: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("synthetic", "csv", "nab"):
            msg = f"source must be synthetic, csv or nab, got {self.source!r}"
            raise ValueError(msg)
        if self.source != "synthetic" and not self.inputs:
            msg = f"source {self.source!r} needs at least one input file"
            raise ValueError(msg)
        if self.warmup_events < 0:
            msg = f"warmup_events must be >= 0, got {self.warmup_events!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class ScoreOutputs:
    """The pipeline's PCollections, for tests and for callers that add steps."""

    predictions: beam.PCollection
    windows: beam.PCollection
    dead_letter: beam.PCollection
    source_events: int | None


def initial_model(cfg: ScoreConfig, num_features: int) -> ModelArtifact:
    """Version 0: an MLP warm-started on a sample disjoint from the stream (synthetic
    source) or left at its seeded initialisation (files)."""
    net = MLPClassifier(num_features, cfg.hidden, seed=cfg.seed)
    if cfg.source == "synthetic" and cfg.warmup_events:
        x, y = warmup_sample(cfg.synthetic, cfg.warmup_events)
        fit(net, x, y, seed=cfg.seed)
    return ModelArtifact.from_module(net, version=0)


def read_source(pipeline: beam.Pipeline, cfg: ScoreConfig) -> SourceOut:
    if cfg.source == "synthetic":
        return pipeline | "Source" >> SyntheticSource(
            cfg.synthetic,
            streaming=cfg.streaming,
            processing_time_per_chunk_s=cfg.processing_time_per_chunk_s,
        )
    fmt = CsvFormat(
        kind="nab" if cfg.source == "nab" else "generic",
        label_column=cfg.label_column,
        time_column=cfg.time_column,
    )
    return pipeline | "Source" >> CsvSource(
        list(cfg.inputs), fmt, streaming=cfg.streaming, watermark_lag_s=cfg.watermark_lag_s
    )


def num_features_of(cfg: ScoreConfig) -> int:
    return cfg.synthetic.num_features if cfg.source == "synthetic" else _csv_width(cfg)


def _csv_width(cfg: ScoreConfig) -> int:
    if cfg.source == "nab":
        return 1
    with open(cfg.inputs[0], encoding="utf-8") as f:
        header = [h.strip() for h in f.readline().split(",")]
    special = {cfg.time_column, "key", "event_id", cfg.label_column}
    return max(1, sum(1 for h in header if h not in special))


def build(pipeline: beam.Pipeline, cfg: ScoreConfig) -> ScoreOutputs:
    """Add the scoring pipeline to ``pipeline``."""
    source = read_source(pipeline, cfg)
    windowed = source.batches | "Window" >> EventTimeWindow(cfg.window, cfg.trigger)
    scored = windowed.batches | "Score" >> StreamingInference(
        initial_model(cfg, num_features_of(cfg)), device=cfg.device
    )
    stats = scored | "WindowStats" >> WindowStats()
    dead = (source.dead_letter, windowed.dropped) | "AllDeadLetters" >> beam.Flatten()
    out = cfg.output
    _ = scored | "WritePredictions" >> WriteBatches(
        os.path.join(out, "predictions"), counter="predictions_out"
    )
    _ = stats | "WriteWindows" >> WriteRecords(os.path.join(out, "windows"), counter="panes_out")
    _ = dead | "WriteDeadLetters" >> WriteRecords(
        os.path.join(out, "dead_letter"), counter="dead_lettered"
    )
    return ScoreOutputs(
        predictions=scored, windows=stats, dead_letter=dead, source_events=source.events
    )
