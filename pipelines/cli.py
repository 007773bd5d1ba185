"""The command line: config files, and turning options into a PipelineConfig.

Options come from three places, later ones winning: built-in defaults, a YAML file
(``--config run.yaml``, keys are option names with ``-`` or ``_``), the command line.
Validation errors name the option and the bad value.
"""

from __future__ import annotations

import argparse
import glob
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import yaml

from model import batch as mb
from model.federated.rounds import FederatedConfig
from model.learn.learner import LearnerConfig
from model.memory_control import MemoryConfig, parse_bytes
from model.online.config import OnlineConfig
from model.reco.events import InteractionFormat
from model.reco.mf import MFConfig
from model.streams import tfrecord, topics
from model.streams.csv_parse import (
    CsvFormat,
    feature_names,
    head_batches,
    head_event_times_us,
    head_num_classes,
    header_names,
)
from model.streams.devices import DevicesConfig
from model.streams.interactions import InteractionsConfig
from model.streams.label_file import parse_label_lines
from model.streams.records import RecordFormat, decode_records, infer_format
from model.streams.synthetic import SyntheticConfig
from model.streams.time_scale import (
    EVENTS_PER_FRAME,
    EVENTS_PER_WINDOW,
    LIVE_FRAME_S,
    duration,
    fit_frame,
    fit_window,
)
from pipelines.config import PipelineConfig, RecoConfig, labels_format
from pipelines.options import build_parser
from runners.flink import FlinkSettings
from transforms.online.classifier import Mode
from transforms.window.spec import TriggerSpec, WindowSpec

T = TypeVar("T")
__all__ = [
    "BadInputError",
    "UsageError",
    "build_parser",
    "config_from_args",
    "flink_from_args",
    "load_config_file",
    "parse_args",
]


class UsageError(ValueError):
    """A bad option, option value or config file."""


class BadInputError(ValueError):
    """Input that cannot be read at all (missing file, unusable header)."""


def _expand_inputs(patterns: Sequence[str]) -> tuple[str, ...]:
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            raise BadInputError(f"--input {pattern!r}: no such file")
        paths.extend(found)
    return tuple(paths)


SYNTHETIC_WINDOW_S = 10.0  # the synthetic stream's scale is known: 100 events/s
FEDERATED_ROUND_S = 2_000.0  # the synthetic devices' round: about 2,000 events
LATENESS_WINDOWS = 3  # default allowed lateness, in windows


@dataclass(frozen=True)
class _FromData:
    """What the defaults take from the data: window size, allowed lateness,
    watermark lag, classes, and notes saying how."""

    window_s: float
    lateness_s: float
    watermark_lag_s: float
    num_classes: int
    frame: int = 1
    notes: tuple[str, ...] = ()
    record_features: tuple[str, ...] = ()  # a Kafka topic's, in its records' order
    label_wait_s: float = 0.0  # --labels: how long an event waits for its label


def _topic_head(args: argparse.Namespace) -> tuple[RecordFormat, list[Any]]:
    """A Kafka topic's record format, told from its first records, and those records
    as micro-batches."""
    if not args.topic:
        raise UsageError("--source kafka needs --topic")
    try:
        values = topics.head(args.bootstrap, args.topic)
        if not values:
            raise BadInputError(f"topic {args.topic!r} on {args.bootstrap} holds no records")
        fmt = infer_format(values, time_field=args.time_column, label_column=args.label_column)
        chunk = decode_records(values, partition=0, offsets=range(len(values)), fmt=fmt,
                               source=args.topic)  # fmt: skip
    except (topics.TopicError, ValueError) as err:
        raise BadInputError(f"{args.topic} on {args.bootstrap}: {err}") from None
    return fmt, [] if chunk.batch is None else [chunk.batch]


def _head(args: argparse.Namespace, inputs: tuple[str, ...]) -> list[Any] | None:
    """The first rows of the first input file (None: a synthetic source)."""
    if args.source == "synthetic" or not inputs:
        return None
    fmt = CsvFormat(
        kind="nab" if args.source == "nab" else "generic",
        label_column=None if args.labels else args.label_column,
        time_column=args.time_column,
    )
    try:
        if args.source == "tfrecord":
            head = tfrecord.head_batches(inputs[0], fmt)
        else:
            head = head_batches(inputs[0], fmt)
            if args.labels and args.label_column in feature_names(inputs[0], fmt):
                msg = f"has the label column {args.label_column!r}, and --labels gives the labels"
                raise ValueError(msg)
    except (OSError, ValueError) as err:
        raise BadInputError(f"{inputs[0]}: {err}") from None
    return head


@dataclass(frozen=True)
class _LabelFile:
    """What the defaults take from a labels file: its first labels (for the classes)
    and the longest time from an event to its label."""

    head: list[Any]
    longest_wait_s: float


def _label_file(args: argparse.Namespace, inputs: tuple[str, ...]) -> _LabelFile:
    if args.source not in ("csv", "tfrecord"):
        raise UsageError(
            f"--labels: a labels file goes with --source csv or tfrecord, not {args.source}"
        )
    if not args.label_column:
        raise UsageError("--labels needs --label-column: the labels file's label column")
    fmt = labels_format(
        args.label_column, args.time_column, args.label_time_column, inputs, args.source
    )
    head: list[Any] = []
    longest = 0
    try:
        with open(args.labels, encoding="utf-8", errors="replace", newline="") as f:
            for chunk in parse_label_lines(f, fmt, args.labels):
                if chunk.batch is None:
                    continue
                if not head:
                    head.append(chunk.batch)
                waits = mb.label_times_us(chunk.batch) - mb.event_times_us(chunk.batch)
                longest = max(longest, int(waits.max()))
    except (OSError, ValueError) as err:
        raise BadInputError(f"--labels: {err}") from None
    return _LabelFile(head, longest / mb.US_PER_SECOND)


def mode_of(args: argparse.Namespace) -> Mode:
    """``--mode`` as given, else coupled (exact prequential), or decoupled when labels
    come later than their events (``--label-delay``, ``--labels``: a coupled step learns
    on arrival)."""
    if args.mode is not None:
        return cast(Mode, args.mode)
    late = args.label_delay is not None or args.labels is not None
    return "decoupled" if late else "coupled"


def _from_data(args: argparse.Namespace, inputs: tuple[str, ...]) -> _FromData:
    """Window size, allowed lateness, watermark lag and classes: as given, else from
    the data's first rows (file sources) or the synthetic stream's known scale."""
    size, lateness, lag = args.window_size, args.allowed_lateness, args.watermark_lag
    classes = args.num_classes
    notes: list[str] = []
    spacing_s = 0.0
    features: tuple[str, ...] = ()
    head: list[Any] | None
    labels = None
    if args.source == "kafka":
        fmt, head = _topic_head(args)
        features = fmt.features
    else:
        head = _head(args, inputs)
        if args.labels is not None:
            labels = _label_file(args, inputs)
    if head is None:
        size = SYNTHETIC_WINDOW_S if size is None else size
        classes = 2 if classes is None else classes
    else:
        if size is None or lag is None:
            try:
                scale = fit_window(head_event_times_us(head))
            except ValueError as err:
                if size is None:
                    raise UsageError(f"--window-size: not given, and {err}: pass one") from None
                scale = None  # only the watermark lag wanted it: no lag then
            spacing_s = 0.0 if scale is None else scale.spacing_s
            if size is None and scale is not None:
                size = scale.window_s
                notes.append(f"window size: {scale.describe()}; --window-size to choose")
        if classes is None:
            classes = head_num_classes(labels.head if labels is not None else head) or 2
            if args.label_column is not None:
                notes.append(
                    f"classes: {classes} (labels 0..{classes - 1} seen in the first rows; "
                    "other labels are dead-lettered, or learned with --new-classes grow; "
                    "--num-classes to choose)"
                )
    frame = 1 if args.frame is None else args.frame
    if args.frame is None and head is not None and args.window == "fixed":
        # a decoupled scorer waits a frame for the frame's model: small frames keep it
        # fresh; otherwise frames only spread Beam's per-window costs
        waits = args.pipeline == "classify" and mode_of(args) == "decoupled"
        events = EVENTS_PER_WINDOW if waits else EVENTS_PER_FRAME
        frame = fit_frame(size, head_event_times_us(head), events)
        if args.source == "kafka" and args.kafka_until == "never":
            # a frame's end is a delay: on a live stream, at most LIVE_FRAME_S
            frame = min(frame, max(1, math.floor(LIVE_FRAME_S / size)))
        if frame > 1:
            notes.append(
                f"frames: {frame} windows to a Beam window of {duration(size * frame)} (about "
                f"{events} events: Beam's per-window costs are paid per frame; statistics "
                "and learning stay per window); --frame 1 for one Beam window per window"
            )
    if lateness is None:
        lateness = LATENESS_WINDOWS * size
    if lag is None:
        lag = spacing_s
    wait = args.label_wait
    if wait is None and labels is not None:
        wait = labels.longest_wait_s
        notes.append(
            f"label wait: {duration(wait)} (the longest an event waits for its label in "
            f"{args.labels}); --label-wait to choose"
        )
    return _FromData(size, lateness, lag, classes, frame, tuple(notes), features, wait or 0.0)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Validated pipeline config. Raises :class:`UsageError` naming the options at
    fault, or :class:`BadInputError` for input files that cannot be used."""
    from model.device import resolve_device

    if args.serve_port is not None and args.runner != "DirectRunner":
        raise UsageError(
            "--serve-port serves the state this process holds: it needs --runner "
            "DirectRunner (on Flink or Prism the state lives in their workers)"
        )
    if args.savepoint and args.runner != "FlinkRunner":
        raise UsageError("--savepoint resumes a stopped Flink job: it needs --runner FlinkRunner")
    streaming, streaming_notes = _streaming(args)  # a usage error before any input is read
    inputs = _expand_inputs(args.input)
    if args.pipeline == "federated" and args.source == "synthetic" and args.window_size is None:
        args.window_size = FEDERATED_ROUND_S  # the device stream: one event a second
    if args.pipeline == "recommend":  # no windows, no classes: only the header to check
        times = _FromData(SYNTHETIC_WINDOW_S, 0.0, args.watermark_lag or 0.0, 2)
        if args.source == "csv":
            _check_interaction_columns(args, inputs)
    else:
        times = _from_data(args, inputs)
    reco = _section(
        "--user-column/--item-column/--rating-column/--factors/--negatives/--id-buckets",
        lambda: RecoConfig(
            InteractionFormat(
                time_column=args.time_column,
                user_column=args.user_column,
                item_column=args.item_column,
                rating_column=args.rating_column or None,
                lag_s=times.watermark_lag_s,
            ),
            MFConfig(
                factors=args.factors,
                seed=args.seed,
                user_buckets=args.id_buckets,
                item_buckets=args.id_buckets,
                negatives=(4 if not args.rating_column else 0)
                if args.negatives is None
                else args.negatives,
            ),
            InteractionsConfig(events=args.events, seed=args.seed),
        ),
    )

    synthetic = _section(
        "--events/--keys/--rate/--batch-size/--late-fraction",
        lambda: SyntheticConfig(
            num_events=args.events,
            num_keys=args.keys,
            events_per_second=args.rate,
            chunk_events=args.batch_size,
            late_fraction=args.late_fraction,
            seed=args.seed,
        ),
    )
    window = _section(
        "--window/--window-size/--window-period/--session-gap/--frame",
        lambda: WindowSpec(
            kind=args.window,
            size_s=times.window_s,
            period_s=args.window_period,
            gap_s=args.session_gap,
            frame=times.frame,
        ),
    )
    trigger = _section(
        "--early-count/--early-after/--late-count/--allowed-lateness",
        lambda: TriggerSpec(
            early_count=args.early_count or None,
            early_after_s=args.early_after,
            late_count=args.late_count,
            allowed_lateness_s=times.lateness_s,
            accumulating=args.accumulating,
        ),
    )
    memory = _section(
        "--backpressure/--memory-budget/--memory-cap",
        lambda: MemoryConfig(
            args.backpressure,
            None if args.memory_budget is None else parse_bytes(args.memory_budget),
            None if args.memory_cap is None else parse_bytes(args.memory_cap),
        ),
    )
    if memory.enabled and args.pipeline == "classify" and args.learner_device == "cpu":
        memory_note = (
            "memory budget: the online learner's fused MLP kernel (CPU) trains outside "
            "torch's allocator, so its steps are not measured (--learner-device cuda "
            "trains through autograd under the budget)"
        )
    else:
        memory_note = None
    devices = _section(
        "--events/--keys/--seed",
        lambda: DevicesConfig(
            events=args.events, seed=args.seed, devices=60 if args.keys == 8 else args.keys
        ),
    )
    federated = None
    if args.pipeline == "federated":
        width = devices.features if args.source == "synthetic" else _csv_width(args, inputs)
        federated = _section(
            "--fed-mode/--compression/--topk-fraction/--max-update-bytes/--secure/--dp-clip"
            "/--dp-noise/--personalize/--steps-per-round/--min-samples",
            lambda: FederatedConfig(
                features=width,
                mode=args.fed_mode,
                compression=args.compression,
                topk_fraction=args.topk_fraction,
                max_update_bytes=args.max_update_bytes,
                secure=args.secure,
                clip=args.dp_clip,
                noise_multiplier=args.dp_noise,
                personalize=args.personalize,
                steps_per_round=args.steps_per_round,
                min_samples=args.min_samples,
                seed=args.seed,
            ),  # fmt: skip
        )
    learner = _section(
        "--optimizer/--lr/--standardize/--replay-size/--ewc-lambda/--learner-device",
        lambda: LearnerConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            replay_size=args.replay_size,
            ewc_lambda=args.ewc_lambda,
            standardize=args.standardize,
            device=args.learner_device,
            seed=args.seed,
            memory=memory,
        ),
    )
    online = _section(
        "--emit-every/--publish-min-samples/--publish-every/--step-rows/--adapt",
        lambda: OnlineConfig(
            emit_every_samples=args.emit_every,
            publish_min_samples=args.publish_min_samples,
            adapt=args.adapt,
            adapt_detector="page-hinkley" if args.drift_detector == "none" else args.drift_detector,
            grow_classes=args.new_classes == "grow",
            publish_every_us=(
                None if args.publish_every is None else round(args.publish_every * 1e6)
            ),
            step_rows=args.step_rows or None,
            learner=learner,
        ),
    )
    _section("--device", lambda: resolve_device(args.device))
    _section("--watermark-interval", lambda: _at_least_zero(args.watermark_interval))
    allowed = (
        frozenset(k.strip() for k in args.allowed_keys.split(",")) if args.allowed_keys else None
    )
    return _section(
        "--pipeline/--source/--input/--label-column/--labels/--label-wait/--num-classes"
        "/--max-classes/--window"
        "/--mode/--per-key/--drift-detector",
        lambda: PipelineConfig(
            output=args.output,
            pipeline=args.pipeline,
            source=args.source,
            inputs=inputs,
            label_column=args.label_column,
            time_column=args.time_column,
            allowed_keys=allowed,
            synthetic=synthetic,
            window=window,
            trigger=trigger,
            online=online,
            mode=mode_of(args),
            per_key=args.per_key,
            streaming=streaming,
            watermark_lag_s=times.watermark_lag_s,
            watermark_interval_s=args.watermark_interval,
            processing_time_per_chunk_s=(
                args.batch_size / args.rate if args.early_after and args.streaming else None
            ),
            device=args.device,
            memory=memory,
            seed=args.seed,
            num_classes=times.num_classes,
            max_classes=args.max_classes,
            lag_label=args.lag_label,
            label_delay_s=args.label_delay,
            labels_path=args.labels,
            label_time_column=args.label_time_column,
            label_wait_s=times.label_wait_s,
            drift_detector=args.drift_detector,
            feature_drift=args.feature_drift,
            notes=times.notes + streaming_notes + ((memory_note,) if memory_note else ()),
            kafka_bootstrap=args.bootstrap,
            kafka_topic=args.topic,
            record_features=times.record_features,
            kafka_until=args.kafka_until,
            kafka_stop_idle_s=args.kafka_stop_idle,
            kafka_sink_topic=args.sink_topic,
            reco=reco,
            serve_port=args.serve_port,
            federated=federated,
            devices=devices,
        ),
    )


def _csv_width(args: argparse.Namespace, inputs: tuple[str, ...]) -> int:
    fmt = CsvFormat(label_column=args.label_column, time_column=args.time_column)
    return len(feature_names(inputs[0], fmt))


def _check_interaction_columns(args: argparse.Namespace, inputs: tuple[str, ...]) -> None:
    wanted = [args.time_column, args.user_column, args.item_column, args.rating_column]
    for path in inputs:
        names = header_names(path)
        missing = [c for c in wanted if c and c not in names]
        if missing:
            raise BadInputError(
                f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                f"{', '.join(names)}); --time-column, --user-column, --item-column and "
                "--rating-column name them"
            )


def _streaming(args: argparse.Namespace) -> tuple[bool, tuple[str, ...]]:
    """Whether the run streams, and the summary's note when not as asked. A Kafka read
    on the DirectRunner does not: Beam's streaming DirectRunner fails on this
    splittable DoFn, so there it is a bounded read (to the end offsets at the start)
    on the FnApiRunner."""
    if args.source != "kafka" or args.runner != "DirectRunner":
        return bool(args.streaming), ()
    if args.kafka_until == "never":
        raise UsageError(
            "--kafka-until never: a live read needs --runner PrismRunner or FlinkRunner "
            "(Beam's streaming DirectRunner fails on this splittable DoFn)"
        )
    note = (
        f"kafka: {args.topic} read to its end offsets at the start, as a bounded run on the "
        "DirectRunner (a live read: --kafka-until never on Prism or Flink)"
    )
    return False, (note,)


def _at_least_zero(seconds: float) -> float:
    if seconds < 0:
        msg = f"must be >= 0 seconds, got {seconds!r}"
        raise ValueError(msg)
    return seconds


def _section(options: str, build: Callable[[], T]) -> T:
    """Build a config section; a ValueError becomes a UsageError naming the options."""
    try:
        return build()
    except ValueError as err:
        raise UsageError(f"{options}: {err}") from None


def load_config_file(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """Option defaults from a YAML mapping; unknown keys are a usage error."""
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as err:
        raise UsageError(f"--config: cannot read {path!r}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise UsageError(f"--config: {path!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config: {path!r} must hold a mapping of option: value")
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        action = actions.get(dest)
        if action is None:
            raise UsageError(f"--config: unknown option {key!r} in {path!r}")
        if action.type is not None and value is not None and not isinstance(value, list):
            try:
                value = action.type(value)  # type: ignore[operator]
            except (TypeError, ValueError):
                raise UsageError(f"--config: {key}: bad value {value!r}") from None
        if action.choices is not None and value not in action.choices:
            raise UsageError(f"--config: {key}: {value!r} is not one of {list(action.choices)}")
        defaults[dest] = value
    return defaults


def flink_from_args(args: argparse.Namespace) -> FlinkSettings:
    return _section(
        "--flink-master/--parallelism/--checkpointing-interval/--state-backend/--environment-type",
        lambda: FlinkSettings(
            master=args.flink_master,
            parallelism=args.parallelism,
            checkpointing_interval_ms=args.checkpointing_interval,
            state_backend=args.state_backend,
            state_backend_path=args.state_backend_path,
            environment_type=args.environment_type,
            environment_config=args.environment_config,
            job_server_jar=args.flink_job_server_jar,
            savepoint_path=args.savepoint,
        ),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Defaults, then the ``--config`` file, then the command line."""
    parser = build_parser()
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_file(parser, known.config))
    return parser.parse_args(argv)
