"""Online learning inside the pipeline, without label leakage.

Both modes share one stateful step per model key (one global key, or one per event
key). It buffers window-aligned micro-batches in Beam state and, when the watermark
passes the end of a window (an event-time timer per window, a dynamic tag of one
timer family), takes every buffered batch of that window and earlier, orders them by
event time (then ``event_id``) and works through them, one window after the other
(each gets its own version even when one firing takes several). A runner delivers
together every timer the watermark has passed: a bounded run's hundred windows fire
in one bundle instead of one bundle each. The learner (weights, optimizer, replay
buffer, EWC state, counters) and the version counter live in Beam state, so the
runner checkpoints them and a replay gives the same versions: no gap, no duplicate.

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
    :class:`transforms.window.stats.WindowStats`, pane ``ON_TIME``, or ``LATE`` for
    batches that arrived after their window was done): the legacy streaming
    DirectRunner does not hold the watermark for user timers, so a GroupByKey after
    this step could see these predictions as late.

Versions advance after every window with new labelled data and, with
``emit_every_samples``, every N samples within a window.

``step_rows`` decouples the optimizer's batch from Beam's: a micro-batch larger than
it is put in event-time order and learned in steps of at most ``step_rows`` rows, each
predicted (coupled mode) by the model that learned from the steps before it. Large
micro-batches keep Beam's per-element cost low; small steps keep learning fine-grained.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.coders import BytesCoder
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
from model.learn.learner import IncrementalLearner, LearnerConfig, dumps_state, loads_state
from model.process_cache import LRU
from transforms.inference.streaming import StreamingInference, scored_batch
from transforms.io.coders import decode_batch, encode_batch
from transforms.window.lateness import NAMESPACE
from transforms.window.stats import StatsTable, WindowStats, stats_of, stats_rows

Mode = Literal["decoupled", "coupled"]
GLOBAL_KEY = ""
# The learners as this process last wrote them, per (step, key): reused when the
# state read back is exactly those bytes (restoring costs milliseconds per firing).
# Process-wide, since a runner may set up a fresh DoFn copy for every bundle (the
# legacy DirectRunner does). Taken out while a firing runs, so a failed firing never
# leaves one half done; the most recently used _LIVE_KEYS stay.
_LIVE_KEYS = 64
_live: LRU[tuple[str, Any], tuple[bytes, Any, Any]] = LRU(_LIVE_KEYS)
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
    step_rows: int | None = None
    learner: LearnerConfig = field(default_factory=LearnerConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("decoupled", "coupled"):
            msg = f"mode must be 'decoupled' or 'coupled', got {self.mode!r}"
            raise ValueError(msg)
        if self.window_s <= 0 or round(self.window_s * 1000) != self.window_s * 1000:
            msg = f"window_s must be a positive whole number of ms, got {self.window_s!r}"
            raise ValueError(msg)
        if self.step_rows is not None and self.step_rows <= 0:
            msg = f"step_rows must be > 0, got {self.step_rows!r}"
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
    codes, keys = mb.key_codes(batch)
    if len(keys) == 1:
        yield keys[0], batch
        return
    order, bounds = mb.group_bounds(codes, len(keys))
    ordered = mb.take(batch, order)
    for i, key in enumerate(keys):
        yield key, ordered.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))


# State and timer of the stateful step (module-level: Beam's parameter defaults).
# Pending batches are kept as bytes: a header (the end of their window and a serial
# number), then Arrow IPC. Beam's state cache weighs what it holds, cheap for bytes
# and slow for Arrow objects. A firing reads headers only; the book notes the serials
# already worked through, and the bag is rewritten to the waiting batches only once
# those are outnumbered (see _fire).
_PENDING = BagStateSpec("pending", BytesCoder())
_BOOK = ReadModifyWriteStateSpec("book", BytesCoder())
# Everything else is one value (see _StepState): one state write per firing, since
# every write makes the state cache measure object sizes, which is slow.
_STEP = ReadModifyWriteStateSpec("step", BytesCoder())
_READY = TimerSpec("ready", TimeDomain.WATERMARK)
PENDING = beam.DoFn.StateParam(_PENDING)
BOOK = beam.DoFn.StateParam(_BOOK)
STEP = beam.DoFn.StateParam(_STEP)
READY = beam.DoFn.TimerParam(_READY)


@dataclass
class _StepState:
    """The learner and its bookkeeping, kept in Beam state between firings."""

    learner: dict[str, Any] | None = None  # IncrementalLearner.snapshot()
    version: int = 0
    since_publish: int = 0  # samples learned since the last published version
    done_until: int | None = None  # the latest firing time processed
    trained_until: int | None = None  # newest event time learned from
    # window start -> (version, inference state serialized: it is kept over several
    # firings, and bytes cost nothing to serialize again at each one)
    history: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    @classmethod
    def load(cls, data: bytes | None) -> _StepState:
        if data is None:
            return cls()
        return cls(**loads_state(data))

    def dump(self) -> bytes:
        return dumps_state(self.__dict__)


def _remember(state: _StepState, start_us: int, learner: IncrementalLearner, keep: int) -> None:
    """Coupled mode: the model (weights and scaling) as it was when window
    ``start_us`` began, for late batches of that window; the ``keep`` latest windows."""
    if start_us not in state.history:
        state.history[start_us] = (state.version, dumps_state(learner.inference_state()))
        for old in sorted(state.history)[:-keep]:
            del state.history[old]


def _predict_as_of(
    state: _StepState,
    start_us: int,
    features: np.ndarray,
    factory: Callable[[], nn.Module],
    config: LearnerConfig,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Prediction by the model of window ``start_us``; version 0 (the untrained model,
    which has seen nothing) when that window is no longer remembered."""
    past = IncrementalLearner(factory(), config)
    version, inference_state = state.history.get(start_us, (0, None))
    if inference_state is not None:
        past.load_inference_state(loads_state(inference_state))
    pred, conf = past.predict(features)
    return pred, conf, version


_HEADER = struct.Struct(">qq")  # window end (us), serial


@dataclass
class _Book:
    """Bookkeeping of the pending bag: the next serial, the serials already worked
    through while others still wait, and the window ends whose timers are set (one
    timer per window end, a dynamic tag of the "ready" family). Kept as plain bytes."""

    serial: int = 0
    done: frozenset[int] = frozenset()
    scheduled: frozenset[int] = frozenset()

    @classmethod
    def load(cls, data: bytes | None) -> _Book:
        if data is None:
            return cls()
        values = np.frombuffer(data, dtype=">i8").tolist()
        serial, n_done = values[0], values[1]
        return cls(serial, frozenset(values[2 : 2 + n_done]), frozenset(values[2 + n_done :]))

    def dump(self) -> bytes:
        values = [self.serial, len(self.done), *sorted(self.done), *sorted(self.scheduled)]
        return np.array(values, dtype=">i8").tobytes()


def _pending(batch: pa.RecordBatch, end_us: int, serial: int) -> bytes:
    return _HEADER.pack(end_us, serial) + encode_batch(batch)


def _pending_header(data: bytes) -> tuple[int, int]:
    return _HEADER.unpack_from(data)  # type: ignore[return-value]


def _pending_batch(data: bytes) -> pa.RecordBatch:
    return decode_batch(pa.py_buffer(data)[_HEADER.size :])


def _fire(
    book: _Book, entries: Iterable[bytes], fired: int
) -> tuple[list[bytes], list[bytes] | None]:
    """One firing's bookkeeping (updates ``book``): the pending entries whose window
    ended by ``fired``, and what the bag must be rewritten to (None: leave it).

    A bag is cleared whole, so while entries of later windows wait the ones taken are
    noted in ``book.done`` instead of rewriting the waiting ones at every firing (in a
    bounded run every batch waits before the first firing: rewriting them each time
    is quadratic). Once the done entries are at least as many as the waiting ones,
    the bag is rewritten to hold only the waiting ones: each entry is rewritten a
    bounded number of times on average, and the bag never holds more than about twice
    what waits (in a live stream: the current windows).
    """
    ready: list[bytes] = []
    taken: list[int] = []
    waiting: list[bytes] = []
    for data in entries:
        end, serial = _pending_header(data)
        if serial in book.done:
            continue
        if end - _MS <= fired:
            ready.append(data)
            taken.append(serial)
        else:
            waiting.append(data)
    if not waiting:
        book.done = frozenset()
        return ready, []
    if len(book.done) + len(taken) >= len(waiting):
        book.done = frozenset()
        return ready, waiting
    book.done = book.done.union(taken)
    return ready, None


def _in_steps(
    learner: IncrementalLearner,
    x: np.ndarray,
    y: np.ndarray | None,
    step_rows: int | None,
    *,
    predict: bool,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Learn from the rows (in event-time order) in steps of at most ``step_rows``;
    with ``predict``, each step is predicted first (prequential) and the predictions
    are returned. Unlabelled rows are only predicted."""
    if y is None:
        return learner.predict(x) if predict else None
    size = step_rows or len(x)
    preds, confs = [], []
    for i in range(0, len(x), size):
        if predict:
            pred, conf, _ = learner.predict_learn(x[i : i + size], y[i : i + size])
            preds.append(pred)
            confs.append(conf)
        else:
            learner.learn(x[i : i + size], y[i : i + size])
    if not predict:
        return None
    return (
        (preds[0], confs[0]) if len(preds) == 1 else (np.concatenate(preds), np.concatenate(confs))
    )


class _OnlineDoFn(beam.DoFn):
    """The stateful step of both modes (see the module docstring)."""

    def __init__(self, factory: Callable[[], nn.Module], cfg: OnlineConfig) -> None:
        self._factory = factory
        self._cfg = cfg
        self._token = uuid.uuid4().hex  # survives pickling: names this step's learners

    def teardown(self) -> None:
        _live.drop(lambda k: k[0] == self._token)

    def setup(self) -> None:
        self._learned = beam.metrics.Metrics.counter(NAMESPACE, "samples_learned")
        self._versions = beam.metrics.Metrics.counter(NAMESPACE, "model_versions")

    def process(
        self,
        kv: tuple[str, pa.RecordBatch],
        pending: Any = PENDING,
        book: Any = BOOK,
        timer: Any = READY,
    ) -> Iterator[Any]:
        _, batch = kv
        end = window_end_us(mb.min_event_time_us(batch), self._cfg.window_us)
        entry = _Book.load(book.read())
        pending.add(_pending(batch, end, entry.serial))
        entry.serial += 1
        # One timer per window, 1 ms before it ends (outputs stamped then stay in the
        # window): a runner delivers every timer the watermark has passed together
        # (a bounded run: all of them, in one bundle) instead of one per round.
        at = end - _MS
        if at not in entry.scheduled:
            entry.scheduled = entry.scheduled | {at}
            timer.set(Timestamp(micros=at), dynamic_timer_tag=str(at))
        book.write(entry.dump())
        return iter(())

    @on_timer(_READY)
    def on_ready(
        self,
        key: Any = beam.DoFn.KeyParam,
        tag: Any = beam.DoFn.DynamicTimerTagParam,
        pending: Any = PENDING,
        book: Any = BOOK,
        step: Any = STEP,
    ) -> Iterator[Any]:
        fired = int(tag)
        entry = _Book.load(book.read())
        entry.scheduled = entry.scheduled - {fired}
        window_us = self._cfg.window_us
        ready_data, rewrite = _fire(entry, pending.read(), fired)
        if rewrite is not None:
            pending.clear()
            for data in rewrite:
                pending.add(data)
        book.write(entry.dump())
        if not ready_data:  # an earlier firing took this window's batches
            return
        ready = [_pending_batch(data) for data in ready_data]
        data = step.read()
        live = _live.pop((self._token, key))
        if live is not None and data is not None and live[0] == data:
            _, state, learner = live
        else:
            state = _StepState.load(data)
            learner = IncrementalLearner(self._factory(), self._cfg.learner)
            if state.learner is not None:
                learner.restore(state.learner, copy_state=False)
        done_until = state.done_until
        # Never publish into a window the learner has already seen data of.
        publish_at = (fired if done_until is None else max(fired, done_until)) + _MS
        stats: dict[int, StatsTable] = {}  # coupled: per window start

        def late_for(start: int) -> bool:  # a window fired before: its batches are late
            return done_until is not None and start + window_us - _MS <= done_until

        def stamp(start: int, late: bool) -> int:
            # on time: in its own window (a firing may take several windows, when the
            # runner delivers their timers out of order); late: the firing's time
            return fired if late else start + window_us - _MS

        coupled = self._cfg.mode == "coupled"
        step_rows = self._cfg.step_rows
        current: int | None = None  # the window (start) whose batches are being learned
        ordered = sorted(((_order_key(b), b) for b in ready), key=lambda kb: kb[0])
        for (first_us, _), batch in ordered:  # event-time order: late (older) batches first
            if step_rows is not None and batch.num_rows > step_rows:
                batch = mb.sort_by_time(batch)
            features = mb.features_numpy(batch)
            labels = mb.labels_numpy(batch)
            start = first_us // window_us * window_us
            late = late_for(start)
            if not late:
                if current is not None and start != current and state.since_publish:
                    # a firing that takes several windows (timers the runner delivered
                    # together, out of order): each still gets its own version
                    yield from self._publish(key, learner, state, current + window_us)
                current = start
            if coupled:
                if late:  # score with the model as it was when this window began
                    pred, conf, used = _predict_as_of(
                        state, start, features, self._factory, self._cfg.learner
                    )
                else:
                    _remember(state, start, learner, self._cfg.history_windows)
                    scored = _in_steps(learner, features, labels, step_rows, predict=True)
                    assert scored is not None
                    (pred, conf), used = scored, state.version
                out = scored_batch(batch, pred, conf, used)
                yield bw.TimestampedValue(out, Timestamp(micros=stamp(start, late)))
                correct = None if labels is None else pred == labels
                codes, keys = mb.key_codes(batch)
                part = stats_of(codes, keys, score=conf, correct=correct, versions=used)
                stats.setdefault(start, StatsTable()).add(part)
                if late:
                    _in_steps(learner, features, labels, step_rows, predict=False)
            else:
                _in_steps(learner, features, labels, step_rows, predict=False)
            if labels is None:
                continue
            newest = int(mb.event_times_us(batch).max())
            state.trained_until = max(newest, state.trained_until or newest)
            self._learned.inc(batch.num_rows)
            state.since_publish += batch.num_rows
            every = self._cfg.emit_every_samples
            if every is not None and state.since_publish >= every:
                at = publish_at if late else start + window_us
                yield from self._publish(key, learner, state, at)
        if state.since_publish:
            yield from self._publish(key, learner, state, publish_at)
        state.learner = learner.snapshot(copy_state=False)  # serialized just below
        state.done_until = publish_at - _MS
        data = state.dump()
        step.write(data)
        state.learner = None  # the live learner is the state now; no second copy kept
        _live.put((self._token, key), (data, state, learner))
        for start, table in sorted(stats.items()):
            late = late_for(start)
            pane = "LATE" if late else "ON_TIME"
            at = Timestamp(micros=stamp(start, late))
            for row in stats_rows(table.stats(), start, start + window_us, pane, int(late)):
                yield beam.pvalue.TaggedOutput("stats", bw.TimestampedValue(row, at))

    def _publish(
        self, key: str, learner: IncrementalLearner, state: _StepState, start_us: int
    ) -> Iterator[Any]:
        """A new version, stamped at the start of the next window and carried forward."""
        state.version += 1
        state.since_publish = 0
        self._versions.inc()
        module, factory = learner.export(self._factory)
        artifact = ModelArtifact.from_module(
            module, state.version, factory=factory, trained_until_us=state.trained_until
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
        e.g. the output of :class:`transforms.online.labels.JoinLabels` when labels come late."""
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
