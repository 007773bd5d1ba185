"""Online learning inside the pipeline, without label leakage.

Both modes share one stateful step per model key (one global key, or one per event
key). It buffers window-aligned micro-batches in Beam state and, when the watermark
passes the end of a window (an event-time timer), takes every buffered batch of that
window and earlier, orders them by event time (then ``event_id``) and works through
them. The learner (weights, optimizer, replay buffer, EWC state, counters) and the
version counter live in Beam state, so the runner checkpoints them and a replay gives
the same versions: no gap, no duplicate.

``decoupled`` (scales out)
    The step only trains. After each window it emits the model as a new version,
    stamped at the start of the next window and repeated for ``carry_windows``
    windows; scorers read these updates as a side input windowed like their main
    input, so the model trained through window k scores window k+1 (and a window
    with no fresh update falls back on the newest of the previous ones).
``coupled`` (exact)
    The step predicts each batch with the current model, then learns from it:
    every event is scored by a model that has seen every earlier event (at batch
    granularity) and nothing later. Predictions are stamped 1 ms before the end of
    their window, so they stay in it. The step also emits the prequential statistics
    of each window it completes (``stats`` output, rows like
    :class:`transforms.window_stats.WindowStats`, pane ``ON_TIME``, or ``LATE`` for
    batches that arrived after their window was done): the legacy streaming
    DirectRunner does not hold the watermark for user timers, so a GroupByKey after
    this step could see these predictions as late.

Versions advance after every window with new labelled data and, with
``emit_every_samples``, every N samples within a window.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms import window as bw
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp
from torch import nn

from model import batch as mb
from model.artifact import ModelArtifact
from model.learner import IncrementalLearner, LearnerConfig
from transforms.coders import decode_batch, encode_batch
from transforms.inference import StreamingInference, scored_batch
from transforms.lateness import NAMESPACE
from transforms.window_stats import Stats, WindowStats, merge_stats, partial_stats, stats_rows

Mode = Literal["decoupled", "coupled"]
GLOBAL_KEY = ""
_MS = 1000


@dataclass(frozen=True)
class OnlineConfig:
    """How the online loop learns and publishes models."""

    mode: Mode = "decoupled"
    window_s: float = 10.0
    per_key: bool = False
    emit_every_samples: int | None = None
    carry_windows: int = 16
    history_windows: int = 8
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("decoupled", "coupled"):
            msg = f"mode must be 'decoupled' or 'coupled', got {self.mode!r}"
            raise ValueError(msg)
        if self.window_s <= 0 or round(self.window_s * 1000) != self.window_s * 1000:
            msg = f"window_s must be a positive whole number of ms, got {self.window_s!r}"
            raise ValueError(msg)
        if self.emit_every_samples is not None and self.emit_every_samples <= 0:
            msg = f"emit_every_samples must be > 0, got {self.emit_every_samples!r}"
            raise ValueError(msg)
        if self.carry_windows <= 0 or self.history_windows <= 0:
            msg = (
                "carry_windows and history_windows must be > 0, got "
                f"{self.carry_windows!r}, {self.history_windows!r}"
            )
            raise ValueError(msg)
        if self.per_key and self.mode == "decoupled":
            msg = "per-key models need mode='coupled' (the decoupled scorer holds one model)"
            raise ValueError(msg)

    @property
    def window_us(self) -> int:
        return round(self.window_s * 1_000_000)


def window_end_us(t_us: int, window_us: int) -> int:
    return (t_us // window_us + 1) * window_us


def _order_key(batch: pa.RecordBatch) -> tuple[int, int]:
    first_id = 0
    if mb.EVENT_ID in batch.schema.names and batch.num_rows:
        first_id = int(pc.min(batch.column(mb.EVENT_ID)).as_py())
    return mb.min_event_time_us(batch), first_id


def split_by_key(batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """``(key, rows of that key)`` for each key in the batch, rows kept in order."""
    encoded = pc.dictionary_encode(batch.column(mb.KEY))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    keys = encoded.dictionary.to_pylist()
    if len(keys) == 1:
        yield keys[0], batch
        return
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(keys) + 1))
    ordered = mb.take(batch, order)
    for i, key in enumerate(keys):
        yield key, ordered.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))


# State and timer of the stateful step (module-level: Beam's parameter defaults).
# Pending batches are kept as Arrow IPC bytes: Beam's state cache measures the deep
# size of what it holds, which is cheap for bytes and slow for Arrow objects.
_PENDING = BagStateSpec("pending", BytesCoder())
_DUE = ReadModifyWriteStateSpec("due", VarIntCoder())
_LEARNER = ReadModifyWriteStateSpec("learner", BytesCoder())
_VERSION = ReadModifyWriteStateSpec("version", VarIntCoder())
_SINCE = ReadModifyWriteStateSpec("since_emit", VarIntCoder())
_DONE = ReadModifyWriteStateSpec("done_until", VarIntCoder())
_HISTORY = ReadModifyWriteStateSpec("history", BytesCoder())
_TRAINED = ReadModifyWriteStateSpec("trained_until", VarIntCoder())
_READY = TimerSpec("ready", TimeDomain.WATERMARK)
PENDING = beam.DoFn.StateParam(_PENDING)
DUE = beam.DoFn.StateParam(_DUE)
LEARNER = beam.DoFn.StateParam(_LEARNER)
VERSION = beam.DoFn.StateParam(_VERSION)
SINCE = beam.DoFn.StateParam(_SINCE)
DONE = beam.DoFn.StateParam(_DONE)
HISTORY = beam.DoFn.StateParam(_HISTORY)
TRAINED = beam.DoFn.StateParam(_TRAINED)
READY = beam.DoFn.TimerParam(_READY)


class _History:
    """Coupled mode: the model as it was when each recent window began, so a late batch
    is scored by the model of its own window (never one trained on later data)."""

    def __init__(self, entries: dict[int, tuple[int, dict[str, Any]]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, data: bytes | None) -> _History:
        if data is None:
            return cls({})
        return cls(torch.load(io.BytesIO(data), weights_only=False))

    def dump(self, keep: int) -> bytes:
        recent = dict(sorted(self.entries.items())[-keep:])
        buf = io.BytesIO()
        torch.save(recent, buf)
        return buf.getvalue()

    def remember(self, start_us: int, version: int, module: nn.Module) -> None:
        if start_us not in self.entries:
            self.entries[start_us] = (version, copy.deepcopy(module.state_dict()))

    def predict(
        self, start_us: int, features: np.ndarray, factory: Callable[[], nn.Module]
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Prediction by the model of window ``start_us``; version 0 (the untrained
        model, which has seen nothing) when that window is no longer remembered."""
        module = factory()
        version, state = self.entries.get(start_us, (0, None))
        if state is not None:
            module.load_state_dict(state)
        pred, conf = IncrementalLearner(module).predict(features)
        return pred, conf, version


class _OnlineDoFn(beam.DoFn):
    """The stateful step of both modes (see the module docstring)."""

    def __init__(self, factory: Callable[[], nn.Module], cfg: OnlineConfig) -> None:
        self._factory = factory
        self._cfg = cfg

    def setup(self) -> None:
        self._learned = beam.metrics.Metrics.counter(NAMESPACE, "samples_learned")
        self._versions = beam.metrics.Metrics.counter(NAMESPACE, "model_versions")

    def process(
        self,
        kv: tuple[str, pa.RecordBatch],
        pending: Any = PENDING,
        due: Any = DUE,
        timer: Any = READY,
    ) -> Iterator[Any]:
        _, batch = kv
        pending.add(encode_batch(batch))
        # Fire 1 ms before the window ends: outputs stamped then stay in the window.
        at = window_end_us(mb.min_event_time_us(batch), self._cfg.window_us) - _MS
        current = due.read()
        if current is None or at < current:
            due.write(at)
            timer.set(Timestamp(micros=at))
        return iter(())

    @on_timer(_READY)
    def on_ready(
        self,
        key: Any = beam.DoFn.KeyParam,
        pending: Any = PENDING,
        due: Any = DUE,
        learner_state: Any = LEARNER,
        version_state: Any = VERSION,
        since_state: Any = SINCE,
        done_state: Any = DONE,
        history_state: Any = HISTORY,
        trained_state: Any = TRAINED,
        timer: Any = READY,
    ) -> Iterator[Any]:
        fired = due.read()
        window_us = self._cfg.window_us
        ready: list[pa.RecordBatch] = []
        waiting: list[pa.RecordBatch] = []
        for data in pending.read():
            batch = decode_batch(data)
            end = window_end_us(mb.min_event_time_us(batch), window_us)
            (ready if end - _MS <= fired else waiting).append(batch)
        pending.clear()
        for batch in waiting:
            pending.add(encode_batch(batch))
        if waiting:
            nxt = min(window_end_us(mb.min_event_time_us(b), window_us) for b in waiting) - _MS
            due.write(nxt)
            timer.set(Timestamp(micros=nxt))
        else:
            due.clear()
        learner = IncrementalLearner(self._factory(), self._cfg.learner)
        stored = learner_state.read()
        if stored is not None:
            learner.load_bytes(stored)
        version = version_state.read() or 0
        since = since_state.read() or 0
        done_until = done_state.read()
        done = fired if done_until is None else max(fired, done_until)
        # Never publish into a window the learner has already seen data of.
        publish_at = done + _MS
        history = _History.load(history_state.read())
        trained_until = trained_state.read()
        stats: dict[int, Stats] = {}
        coupled = self._cfg.mode == "coupled"
        for batch in sorted(ready, key=_order_key):
            features = mb.features_numpy(batch)
            start = mb.min_event_time_us(batch) // window_us * window_us
            if coupled:
                late = done_until is not None and start + window_us - _MS <= done_until
                if late:  # score with the model as it was when this window began
                    pred, conf, used = history.predict(start, features, self._factory)
                else:
                    history.remember(start, version, learner.module)
                    (pred, conf), used = learner.predict(features), version
                out = scored_batch(batch, pred, conf, used)
                yield bw.TimestampedValue(out, Timestamp(micros=fired))
                merge_stats(stats.setdefault(start, {}), partial_stats(out))
            labels = mb.labels_numpy(batch)
            if labels is None:
                continue
            learner.learn(features, labels)
            newest = int(mb.event_times_us(batch).max())
            trained_until = newest if trained_until is None else max(trained_until, newest)
            self._learned.inc(batch.num_rows)
            since += batch.num_rows
            every = self._cfg.emit_every_samples
            if every is not None and since >= every:
                version, since = version + 1, 0
                yield from self._publish(key, learner, version, publish_at, trained_until)
        if since:
            version, since = version + 1, 0
            yield from self._publish(key, learner, version, publish_at, trained_until)
        learner_state.write(learner.to_bytes())
        version_state.write(version)
        since_state.write(since)
        done_state.write(done)
        if trained_until is not None:
            trained_state.write(trained_until)
        if coupled:
            history_state.write(history.dump(self._cfg.history_windows))
        for start, per_key in sorted(stats.items()):
            late = done_until is not None and start + window_us - _MS <= done_until
            pane = "LATE" if late else "ON_TIME"
            for row in stats_rows(per_key, start, start + window_us, pane, int(late)):
                yield beam.pvalue.TaggedOutput(
                    "stats", bw.TimestampedValue(row, Timestamp(micros=fired))
                )

    def _publish(
        self,
        key: str,
        learner: IncrementalLearner,
        version: int,
        start_us: int,
        trained_until: int | None,
    ) -> Iterator[Any]:
        """The new version, stamped at the start of the next window and carried forward."""
        self._versions.inc()
        artifact = ModelArtifact.from_module(
            learner.module, version, factory=self._factory, trained_until_us=trained_until
        )
        value = artifact if key == GLOBAL_KEY else (key, artifact)
        tag = "updates" if self._cfg.mode == "coupled" else None
        for i in range(self._cfg.carry_windows if self._cfg.mode == "decoupled" else 1):
            stamped = bw.TimestampedValue(
                value, Timestamp(micros=start_us + i * self._cfg.window_us)
            )
            yield stamped if tag is None else beam.pvalue.TaggedOutput(tag, stamped)


@dataclass(frozen=True)
class OnlineOut:
    """``predictions``: scored batches (windowed); ``updates``: published model versions;
    ``stats``: prequential statistics, one row per key, window and pane."""

    predictions: beam.PCollection
    updates: beam.PCollection
    stats: beam.PCollection


class OnlineClassifier(beam.PTransform):
    """Predict-then-learn on windowed micro-batches; see the module docstring.

    ``factory()`` builds a fresh module (seeded, so every call gives the same initial
    weights); version 0 is that untrained module.
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        cfg: OnlineConfig,
        *,
        device: str = "cpu",
        labelled: beam.PCollection | None = None,
    ) -> None:
        """``labelled``: train on these batches instead of the input (decoupled mode),
        e.g. the output of :class:`transforms.labels.JoinLabels` when labels come late."""
        super().__init__()
        if labelled is not None and cfg.mode == "coupled":
            msg = "separately arriving labels need mode='decoupled' (coupled learns on arrival)"
            raise ValueError(msg)
        self._factory = factory
        self._cfg = cfg
        self._device = device
        self._labelled = labelled

    def expand(self, batches: beam.PCollection) -> OnlineOut:  # type: ignore[override]
        cfg = self._cfg
        per_key = cfg.per_key
        training = batches if self._labelled is None else self._labelled
        keyed = (
            training
            | "GlobalWindow" >> beam.WindowInto(bw.GlobalWindows())
            | "KeyByModel"
            >> (beam.FlatMap(split_by_key) if per_key else beam.Map(lambda b: (GLOBAL_KEY, b)))
        )
        fixed = bw.FixedWindows(cfg.window_s)
        step = _OnlineDoFn(self._factory, cfg)
        if cfg.mode == "coupled":
            out = keyed | "PredictThenLearn" >> beam.ParDo(step).with_outputs(
                "updates", "stats", main="predictions"
            )
            predictions = out.predictions | "PredictionWindows" >> beam.WindowInto(fixed)
            return OnlineOut(predictions=predictions, updates=out.updates, stats=out.stats)
        updates = keyed | "Train" >> beam.ParDo(step) | "UpdateWindows" >> beam.WindowInto(fixed)
        initial = ModelArtifact.from_module(self._factory(), 0, factory=self._factory)
        predictions = batches | "Score" >> StreamingInference(
            initial, device=self._device, updates=updates
        )
        stats = predictions | "WindowStats" >> WindowStats()
        return OnlineOut(predictions=predictions, updates=updates, stats=stats)
