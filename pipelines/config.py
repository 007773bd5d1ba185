"""The typed configuration every pipeline is built from, and what they share."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import apache_beam as beam
from torch import nn

from model.drift import DETECTORS
from model.federated.rounds import FederatedConfig
from model.memory_control import MemoryConfig
from model.mlp import MLPClassifier
from model.online.config import OnlineConfig
from model.reco.events import InteractionFormat
from model.reco.mf import MFConfig
from model.streams import tfrecord
from model.streams.csv_parse import CsvFormat, check_header, header_names
from model.streams.devices import DevicesConfig
from model.streams.interactions import InteractionsConfig
from model.streams.label_file import LabelFormat
from model.streams.records import RecordFormat
from model.streams.synthetic import SyntheticConfig
from model.vocabulary import KEY, LABEL_TIME, Metric
from pipelines.output_dir import KAFKA_READ_DONE
from runners.direct import executes_test_stream_in_python
from transforms.io.kafka import KafkaRead, KafkaSource
from transforms.io.kafka_sink import WriteKafka
from transforms.io.sinks import WriteBatches, WriteRecords
from transforms.io.sources import CsvSource, SourceOut, SyntheticSource
from transforms.online.classifier import Mode
from transforms.window.spec import TriggerSpec, WindowSpec

SourceKind = Literal["synthetic", "csv", "nab", "tfrecord", "kafka"]
PipelineKind = Literal["anomaly", "classify", "federated", "recommend", "score"]
PIPELINES: dict[str, str] = {
    "anomaly": "per-key streaming anomaly detection (robust z-scores, a seasonal "
    "baseline, a streaming Transformer's forecast residual): anomaly_score, is_anomaly",
    "classify": "predict-then-learn: online PyTorch learning whose new model versions "
    "score the stream in the same run (prequential accuracy per window)",
    "federated": "each key a device learning on its own events; each event-time window "
    "a round in which devices send model deltas (never data) to FedAvg",
    "recommend": "streaming biased matrix factorization of user-item ratings: each "
    "interaction's predicted rating from the embeddings before it, then learnt",
    "score": "score every event with one warm-started PyTorch model (no learning)",
}


@dataclass(frozen=True)
class RecoConfig:
    """The recommend pipeline's input columns, model, and synthetic stream."""

    interactions: InteractionFormat = field(default_factory=InteractionFormat)
    model: MFConfig = field(default_factory=MFConfig)
    synthetic: InteractionsConfig = field(default_factory=InteractionsConfig)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline needs; validated on construction."""

    output: str
    pipeline: PipelineKind = "classify"
    source: SourceKind = "synthetic"
    inputs: tuple[str, ...] = ()
    label_column: str | None = None
    time_column: str = "timestamp"
    allowed_keys: frozenset[str] | None = None
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    window: WindowSpec = field(default_factory=WindowSpec)
    trigger: TriggerSpec = field(default_factory=TriggerSpec)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    mode: Mode = "coupled"
    per_key: bool = False
    streaming: bool = False
    watermark_lag_s: float = 0.0
    watermark_interval_s: float = 0.0
    processing_time_per_chunk_s: float | None = None
    device: str = "auto"
    # memory control of scoring and learning (--backpressure, --memory-budget)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    hidden: tuple[int, ...] = (32,)
    warmup_events: int = 2_000
    seed: int = 0
    num_classes: int = 2
    # with online.grow_classes: labels in [num_classes, max_classes) grow the model's
    # output layer; beyond, and without growth beyond num_classes, dead-lettered
    max_classes: int = 100
    lag_label: bool = False  # classify: the key's previous label as a feature
    drift_detector: str = "page-hinkley"  # classify: on each key's error; "none": off
    feature_drift: bool = False  # classify: each window's features vs the previous window's
    # classify (decoupled): each label arrives this much event time after its event
    # (streaming replays; bounded runs part labels from events alike): scored without
    # it, evaluated and learned from when it comes (joined by event_id)
    label_delay_s: float | None = None
    # classify (decoupled): labels from this file instead (model.streams.label_file),
    # each learned from when the source's watermark passes its label time; an event
    # waits label_wait_s (event time) past its window's end for its label
    labels_path: str | None = None
    label_time_column: str = LABEL_TIME
    label_wait_s: float = 0.0
    notes: tuple[str, ...] = ()  # how defaults were chosen, for the summary
    # source kafka: where, which topic, its records' feature fields, and how far to read
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_topic: str | None = None
    record_features: tuple[str, ...] = ()
    kafka_until: Literal["end", "never"] = "end"
    kafka_stop_idle_s: float | None = None
    # predictions also to this Kafka topic at kafka_bootstrap (transforms.io.kafka_sink)
    kafka_sink_topic: str | None = None
    reco: RecoConfig = field(default_factory=RecoConfig)
    serve_port: int | None = None  # live queries and the dashboard on 127.0.0.1 (0: any)
    federated: FederatedConfig | None = None  # the federated pipeline's (features from data)
    devices: DevicesConfig = field(default_factory=DevicesConfig)  # its synthetic stream

    @property
    def lags_labels(self) -> bool:
        """The classify pipeline adds the lagged label to the features (not with
        delayed labels: the previous label may not be known yet)."""
        return self.lag_label and self.pipeline == "classify" and not self.delays_labels

    @property
    def delays_labels(self) -> bool:
        """The classify pipeline joins labels that arrive after their events."""
        late = self.label_delay_s is not None or self.labels_path is not None
        return late and self.pipeline == "classify"

    @property
    def label_horizon_s(self) -> float:
        """How long after a window's end its events wait for their labels (and labels
        for their events): the allowed lateness, the label delay (or a labels file's
        wait), and a Beam window (a replay hands labels on within one of their time,
        see :mod:`model.streams.delayed`)."""
        frame_s = self.window.size_s * self.window.frame
        wait_s = self.label_wait_s if self.labels_path is not None else self.label_delay_s
        return self.trigger.allowed_lateness_s + (wait_s or 0.0) + frame_s

    @property
    def unbounded(self) -> bool:
        """The source never ends by itself: a streaming replay, or a live Kafka read."""
        return self.streaming or self.live_read

    @property
    def live_read(self) -> bool:
        """The source is read live (a Kafka topic read on and on)."""
        return self.source == "kafka" and self.kafka_until == "never"

    @property
    def detects_drift(self) -> bool:
        """The classify pipeline watches every key's prequential error."""
        return self.drift_detector != "none" and self.pipeline == "classify"

    def __post_init__(self) -> None:
        if self.pipeline not in PIPELINES:
            msg = f"pipeline must be one of {sorted(PIPELINES)}, got {self.pipeline!r}"
            raise ValueError(msg)
        if self.source not in ("synthetic", "csv", "nab", "tfrecord", "kafka"):
            msg = f"source must be synthetic, csv, nab, tfrecord or kafka, got {self.source!r}"
            raise ValueError(msg)
        if self.source == "kafka" and (not self.kafka_topic or not self.record_features):
            msg = "source 'kafka' needs a topic and its records' feature fields"
            raise ValueError(msg)
        if self.kafka_stop_idle_s is not None and self.kafka_until != "never":
            msg = "--kafka-stop-idle ends a live read: it needs --kafka-until never"
            raise ValueError(msg)
        if self.source not in ("synthetic", "kafka") and not self.inputs:
            msg = f"source {self.source!r} needs at least one input file"
            raise ValueError(msg)
        if self.drift_detector not in ("none", *DETECTORS):
            known = ["none", *sorted(DETECTORS)]
            msg = f"drift detector must be one of {known}, got {self.drift_detector!r}"
            raise ValueError(msg)
        if self.num_classes < 2:
            msg = f"num_classes must be >= 2, got {self.num_classes!r}"
            raise ValueError(msg)
        if self.online.grow_classes and self.max_classes < self.num_classes:
            msg = f"max_classes ({self.max_classes}) must be >= num_classes ({self.num_classes})"
            raise ValueError(msg)
        if self.warmup_events < 0:
            msg = f"warmup_events must be >= 0, got {self.warmup_events!r}"
            raise ValueError(msg)
        if self.mode not in ("decoupled", "coupled"):
            msg = f"mode must be 'decoupled' or 'coupled', got {self.mode!r}"
            raise ValueError(msg)
        if self.label_delay_s is not None and self.label_delay_s < 0:
            msg = f"label delay must be >= 0 seconds, got {self.label_delay_s!r}"
            raise ValueError(msg)
        if self.labels_path is not None:
            if self.label_delay_s is not None:
                raise ValueError("labels come from a labels file or after a delay, not both")
            if self.source not in ("csv", "tfrecord"):
                msg = f"a labels file goes with a csv or tfrecord source, got {self.source!r}"
                raise ValueError(msg)
            if self.label_column is None:
                raise ValueError("a labels file needs --label-column: its label column")
            if self.label_wait_s < 0:
                msg = f"label wait must be >= 0 seconds, got {self.label_wait_s!r}"
                raise ValueError(msg)
        if self.delays_labels and self.mode == "coupled":
            msg = "delayed labels need mode='decoupled' (coupled learns each batch on arrival)"
            raise ValueError(msg)
        if self.per_key and self.mode == "decoupled":
            raise ValueError(
                "per-key models need mode='coupled' (the decoupled scorer holds one model)"
            )
        if self.serve_port is not None and not 0 <= self.serve_port <= 65535:
            msg = f"serve port must be in 0..65535, got {self.serve_port!r}"
            raise ValueError(msg)
        if self.pipeline == "federated":
            if self.source not in ("synthetic", "csv"):
                msg = f"the federated pipeline reads csv or synthetic devices, not {self.source!r}"
                raise ValueError(msg)
            if self.source == "csv" and self.label_column is None:
                raise ValueError("the federated pipeline needs labels: pass --label-column")
            if self.federated is None:
                raise ValueError("the federated pipeline needs its FederatedConfig")
        if self.pipeline == "recommend" and self.source not in ("synthetic", "csv"):
            msg = f"the recommend pipeline reads csv or synthetic interactions, not {self.source!r}"
            raise ValueError(msg)
        if self.pipeline == "classify":
            if self.window.kind != "fixed":
                msg = (
                    "the classify pipeline learns window by window: it needs fixed windows, "
                    f"got {self.window.kind} windows"
                )
                raise ValueError(msg)
            if self.source in ("csv", "kafka") and self.label_column is None:
                raise ValueError("the classify pipeline needs labels: pass --label-column")


def csv_format(cfg: PipelineConfig) -> CsvFormat:
    """The events' format (with a labels file, the events carry no labels)."""
    labels = None if cfg.labels_path is not None else cfg.label_column
    return CsvFormat(
        kind="nab" if cfg.source == "nab" else "generic",
        label_column=labels,
        time_column=cfg.time_column,
        allowed_keys=cfg.allowed_keys,
        num_classes=None if labels is None else label_classes(cfg),
    )


def label_format(cfg: PipelineConfig) -> LabelFormat:
    """A labels file's format (see :func:`labels_format`)."""
    assert cfg.label_column is not None
    return labels_format(
        cfg.label_column,
        cfg.time_column,
        cfg.label_time_column,
        cfg.inputs,
        cfg.source,
        label_classes(cfg),
    )


def labels_format(
    label_column: str,
    time_column: str,
    label_time_column: str,
    inputs: tuple[str, ...],
    source: str,
    num_classes: int | None = None,
) -> LabelFormat:
    """A labels file's format: its labels are for the events' one key (the input
    file's name) when it has no key column, if there is one input file and it has no
    key column either (a CSV's header says; TFRecord files are taken to have none);
    otherwise the labels file must name each label's key."""
    default_key = None
    if len(inputs) == 1 and (source == "tfrecord" or KEY not in _header(inputs[0])):
        default_key = os.path.basename(inputs[0])
    return LabelFormat(
        label_column,
        time_column=time_column,
        label_time_column=label_time_column,
        default_key=default_key,
        num_classes=num_classes,
    )


def _header(path: str) -> list[str]:
    try:
        return header_names(path)
    except ValueError:
        return []  # not a CSV file (the source says what is wrong with it)


def label_classes(cfg: PipelineConfig) -> int:
    """Labels are class indices below this; a source dead-letters any other."""
    return cfg.max_classes if cfg.online.grow_classes else cfg.num_classes


def read_source(pipeline: beam.Pipeline, cfg: PipelineConfig) -> SourceOut:
    """The configured source; a streaming replay takes its elements in the form the
    pipeline's runner can run (the runner set-up says which)."""
    python_test_stream = executes_test_stream_in_python(pipeline.runner)
    if cfg.source == "synthetic":
        return pipeline | "Source" >> SyntheticSource(
            cfg.synthetic,
            streaming=cfg.streaming,
            python_test_stream=python_test_stream,
            processing_time_per_chunk_s=cfg.processing_time_per_chunk_s,
            watermark_interval_s=cfg.watermark_interval_s,
            label_delay_s=cfg.label_delay_s if cfg.delays_labels else None,
            label_span_s=cfg.window.size_s * cfg.window.frame,
        )
    if cfg.source == "kafka":
        assert cfg.kafka_topic is not None
        fmt = RecordFormat(
            cfg.record_features,
            time_field=cfg.time_column,
            label_column=cfg.label_column,
            num_classes=None if cfg.label_column is None else label_classes(cfg),
            default_key=cfg.kafka_topic,
        )
        read = KafkaRead(
            cfg.kafka_bootstrap,
            cfg.kafka_topic,
            fmt,
            until=cfg.kafka_until,
            max_out_of_order_s=cfg.watermark_lag_s,
            stop_idle_s=cfg.kafka_stop_idle_s,
            # a live read's end, for a runner that keeps the job running (Flink); in
            # the output folder, so a run resumed there knows of partitions read before
            done_dir=os.path.join(cfg.output, KAFKA_READ_DONE) if cfg.kafka_stop_idle_s else None,
        )
        return pipeline | "Source" >> KafkaSource(read)
    return pipeline | "Source" >> CsvSource(
        list(cfg.inputs),
        csv_format(cfg),
        streaming=cfg.streaming,
        python_test_stream=python_test_stream,
        watermark_lag_s=cfg.watermark_lag_s,
        watermark_interval_s=cfg.watermark_interval_s,
        file_format="tfrecord" if cfg.source == "tfrecord" else "csv",
        label_delay_s=cfg.label_delay_s if cfg.delays_labels else None,
        label_span_s=cfg.window.size_s * cfg.window.frame,
        labels=None if cfg.labels_path is None else (cfg.labels_path, label_format(cfg)),
    )


def input_features(source: str, path: str, fmt: CsvFormat) -> int:
    """The number of features of an input file; ``ValueError`` if it cannot be read."""
    if source == "tfrecord":
        return tfrecord.num_features(path, fmt)
    return check_header(path, fmt)


def num_features_of(cfg: PipelineConfig) -> int:
    """The model's input width: the source's features, and the lagged label's one-hot."""
    if cfg.source == "synthetic":
        width = cfg.synthetic.num_features
    elif cfg.source == "kafka":
        width = len(cfg.record_features)
    else:
        width = input_features(cfg.source, cfg.inputs[0], csv_format(cfg))
    return width + (cfg.num_classes if cfg.lags_labels else 0)


def model_factory(cfg: PipelineConfig) -> Callable[[], nn.Module]:
    """A picklable factory for the pipeline's (seeded) MLP."""
    return functools.partial(
        MLPClassifier, num_features_of(cfg), cfg.hidden, num_classes=cfg.num_classes, seed=cfg.seed
    )


def write_outputs(
    cfg: PipelineConfig,
    predictions: beam.PCollection,
    windows: beam.PCollection | None,
    dead_letter: beam.PCollection,
) -> None:
    """predictions/ (Parquet + JSONL), windows/ (when given) and dead_letter/ (JSONL)
    under output."""
    out = cfg.output
    _ = predictions | "WritePredictions" >> WriteBatches(
        os.path.join(out, "predictions"), counter=Metric.PREDICTIONS_OUT
    )
    if windows is not None:
        _ = windows | "WriteWindows" >> WriteBatches(
            os.path.join(out, "windows"), counter=Metric.PANES_OUT, formats=("jsonl",)
        )
    if cfg.kafka_sink_topic is not None:
        _ = predictions | "PredictionsToKafka" >> WriteKafka(
            cfg.kafka_bootstrap, cfg.kafka_sink_topic, counter=Metric.KAFKA_RECORDS_OUT
        )
    _ = dead_letter | "WriteDeadLetters" >> WriteRecords(
        os.path.join(out, "dead_letter"), counter=Metric.DEAD_LETTERED
    )
