"""One model key's online learning, as a plain object: no Beam, no runner.

An :class:`OnlineStep` takes window-aligned micro-batches (:meth:`OnlineStep.on_batch`)
and, when the caller says a window has ended (:meth:`OnlineStep.on_window_end`,
called at the window's end less 1 ms, so that outputs stamped then stay in the
window), works through every batch buffered for that window and earlier, in event
time order (then ``event_id``), one window after the other: each window gets its
own model version even when one call takes several (a runner delivers together
every timer the watermark has passed). The caller keeps the buffer (entries are
bytes, see :mod:`model.online.book`) and the step's two snapshots (its book of the
buffer, and its model state: learner, version counter, history); a restored step
continues exactly, so a replay gives the same versions, no gap and no duplicate.

Two modes, two classes:

:class:`TrainingStep` (decoupled; it scales out)
    Only trains. After each window the model becomes a new version, stamped at the
    start of the next window and repeated for ``carry_windows`` windows, for scorers
    that read versions as a side input windowed like their main input: the model
    trained through window k scores window k+1.
:class:`PrequentialStep` (coupled; exact)
    Predicts each batch with the current model, then learns from it: every event is
    scored by a model that has seen every earlier event (at step granularity) and
    nothing later. A batch that arrives after its window was done (late) is scored by
    the model as it was when that window began, and learned from. Also returns each
    window's prequential statistics.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from torch import nn

from model import batch as mb
from model.alarms import Alarms
from model.artifact import ModelArtifact
from model.drift import DETECTORS, WARNING_DETECTORS
from model.learn.grow import grow_snapshot, output_classes
from model.learn.learner import IncrementalLearner, dumps_state, loads_state
from model.learn.standardized import StandardizedFactory
from model.memory_control import MemoryFigures
from model.online.book import MS, Book, entry_batch
from model.online.config import OnlineConfig, WindowGrid
from model.stats import StatsTable, by_window, stats_of, stats_rows, window_stats_rows
from model.vocabulary import Pane

Stamped = tuple[Any, int]  # a value and the event time (us) to stamp it at


@dataclass(frozen=True)
class StepSnapshot:
    """A step's state as bytes: its book of the buffer (written at every batch) and
    its model state (written when a window ends). None: nothing yet."""

    book: bytes | None = None
    model: bytes | None = None


@dataclass
class WindowEnd:
    """What one :meth:`OnlineStep.on_window_end` produced.

    ``keep``: what the buffer must be rewritten to (None: leave it as it is);
    ``learned``: whether batches were worked through (the model state changed);
    ``predictions`` (prequential mode: scored batches), ``updates`` (new versions)
    and ``stats`` (prequential mode: a batch of rows, one per key and window, per
    window or frame), each value with the event time to stamp it at; ``samples``:
    rows learned; ``versions``: versions made.
    """

    keep: list[bytes] | None
    learned: bool = False
    predictions: list[Stamped] = field(default_factory=list)
    updates: list[Stamped] = field(default_factory=list)
    stats: list[Stamped] = field(default_factory=list)
    samples: int = 0
    versions: int = 0
    adaptations: int = 0
    backgrounds: int = 0  # background learners started (the background policy)
    classes_added: int = 0  # outputs the head grew by (config.grow_classes)


@dataclass
class _ModelState:
    """The learner and its bookkeeping, kept (as bytes) between window ends."""

    learner: dict[str, Any] | None = None  # IncrementalLearner.snapshot()
    version: int = 0
    since_publish: int = 0  # samples learned since the last published version
    done_until: int | None = None  # the latest firing time worked through
    trained_until: int | None = None  # newest event time learned from
    # the last published version, to serve on until the next one: (version, weights,
    # the standardized wrapper's width or None, trained until), and when it was
    published: tuple[int, bytes, int | None, int | None] | None = None
    published_at: int | None = None
    carried_to: int | None = None  # decoupled: windows before this have the last version
    # adaptation (config.adapt): the detector's state, samples left at a boosted rate
    detector: dict[str, float] | None = None
    boost_left: int = 0
    # the background policy: the warning detector's state, the background learner
    # (IncrementalLearner.snapshot()) and how many rows it has learned
    warning: dict[str, float] | None = None
    background: dict[str, Any] | None = None
    background_seen: int = 0
    # prequential: window start -> (version, inference state serialized: it is kept
    # over several window ends, and bytes cost nothing to serialize again)
    history: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    num_classes: int | None = None  # the head grown to (None: the factory's own)
    published_classes: int | None = None  # the head of the last published version


@dataclass
class _Run:
    """One window end in progress."""

    fired: int
    done_until: int | None  # as it was before this window end
    publish_at: int
    out: WindowEnd
    tables: dict[int, StatsTable] = field(default_factory=dict)  # by window start

    def late(self, start: int, size: int) -> bool:
        """A window done at an earlier window end: its batches are late."""
        return self.done_until is not None and start + size - MS <= self.done_until

    def stamp(self, start: int, size: int, late: bool) -> int:
        """On time: in its own window (one call may take several windows); late: at
        this window end."""
        return self.fired if late else start + size - MS


class OnlineStep:
    """Buffers batches per window and learns them when the window ends; see the
    module docstring. Subclasses say what is done with each batch and each version.

    ``factory()`` builds a fresh module (seeded, so every call gives the same initial
    weights); version 0 is that untrained module.
    """

    def __init__(
        self, factory: Callable[[], nn.Module], config: OnlineConfig, grid: WindowGrid
    ) -> None:
        if config.grow_classes:
            try:
                inspect.signature(factory).bind(num_classes=2)
            except TypeError:
                msg = "grow_classes needs a factory that takes num_classes= (a keyword)"
                raise ValueError(msg) from None
        self.factory = factory
        self.config = config
        self.grid = grid
        self.book = Book()
        self._state: _ModelState | None = None  # None: not read yet (built on demand)
        self._learner: IncrementalLearner | None = None
        self._model_bytes: bytes | None = None  # what _state was restored from / saved as

    def memory_figures(self) -> MemoryFigures | None:
        """What the learner's memory control measured since the last call (None
        without a budget, or before a model was built)."""
        learner = self._learner
        if learner is None or learner.memory is None:
            return None
        return learner.memory.figures.drain()

    # -- the API a runner's stateful step calls -----------------------------------
    def on_batch(self, batch: pa.RecordBatch) -> tuple[bytes, int | None]:
        """Buffer ``batch``: the entry to append to the buffer, and the time of the
        timer to set for its window (None: one is set already)."""
        end = self.grid.end_of(mb.min_event_time_us(batch))
        entry = self.book.add(batch, end)
        fire = end - MS
        return entry, (fire if self.book.schedule(fire) else None)

    def on_window_end(self, fired_us: int, entries: Iterable[bytes]) -> WindowEnd:
        """The timer at ``fired_us`` fired: work through the buffered ``entries`` of
        every window that ended by then."""
        ready_data, keep = self.book.take_ready(entries, fired_us)
        if not ready_data:  # an earlier window end took this window's batches
            return WindowEnd(keep=keep)
        state, learner = self._model()
        done_until = state.done_until
        # Never publish into a window the learner has already seen data of.
        publish_at = (fired_us if done_until is None else max(fired_us, done_until)) + MS
        run = _Run(fired_us, done_until, publish_at, WindowEnd(keep=keep, learned=True))
        size = self.grid.size_us
        step_rows = self.config.step_rows
        every = self.config.emit_every_samples
        current: int | None = None  # the window (start) whose batches are being learned
        ordered = sorted(((mb.order_key(b), b) for b in map(entry_batch, ready_data)), key=_first)
        for (first_us, _), batch in ordered:  # event-time order: late (older) batches first
            if step_rows is not None and batch.num_rows > step_rows:
                batch = mb.sort_by_time(batch)
            start = self.grid.start_of(first_us)
            late = run.late(start, size)
            if not late:
                if current is not None and start != current:
                    # one call taking several windows: each still ends on its own
                    self._window_done(run, state, learner, current + size)
                current = start
            for grown, piece, labels in self._class_pieces(run, state, learner, batch):
                learner = grown  # the head grown at a new class serves what follows
                self._work(run, state, learner, piece, labels, start, late)
                if labels is None:
                    continue
                newest = int(mb.event_times_us(piece).max())
                if state.trained_until is None or newest > state.trained_until:
                    state.trained_until = newest
                run.out.samples += piece.num_rows
                state.since_publish += piece.num_rows
                if every is not None and state.since_publish >= every:
                    self._publish(run, state, learner, publish_at if late else start + size)
        self._window_done(run, state, learner, publish_at)
        state.done_until = publish_at - MS
        state.learner = learner.snapshot(copy_state=False)  # serialized just below
        self._model_bytes = dumps_state(state.__dict__)
        state.learner = None  # the live learner is the state now; no second copy kept
        self._finish(run)
        return run.out

    def snapshot(self) -> StepSnapshot:
        return StepSnapshot(book=self.book.snapshot(), model=self._model_bytes)

    def restore(self, snapshot: StepSnapshot) -> None:
        """Continue from ``snapshot``. The model state is decoded only when a window
        end needs it, and not at all when it is what this step holds already (a step
        kept alive between calls: decoding a learner costs milliseconds)."""
        self.book.restore(snapshot.book)
        if snapshot.model is None or snapshot.model != self._model_bytes:
            self._state, self._learner = None, None
            self._model_bytes = snapshot.model

    # -- what the modes share --------------------------------------------------------
    def _model(self) -> tuple[_ModelState, IncrementalLearner]:
        if self._state is None or self._learner is None:
            state = _ModelState()
            if self._model_bytes is not None:
                state = _ModelState(**loads_state(self._model_bytes))
            learner = IncrementalLearner(self._factory(state.num_classes)(), self.config.learner)
            if state.learner is not None:
                learner.restore(state.learner, copy_state=False)
                state.learner = None
            self._state, self._learner = state, learner
        return self._state, self._learner

    def _factory(self, num_classes: int | None) -> Callable[[], nn.Module]:
        """What builds the module with ``num_classes`` outputs (None: the factory's)."""
        if num_classes is None:
            return self.factory
        factory: Callable[..., nn.Module] = self.factory  # takes num_classes= (config)
        return functools.partial(factory, num_classes=num_classes)

    def _class_pieces(
        self, run: _Run, state: _ModelState, learner: IncrementalLearner, batch: pa.RecordBatch
    ) -> Iterator[tuple[IncrementalLearner, pa.RecordBatch, np.ndarray | None]]:
        """The batch with its labels and the learner for it; with ``grow_classes``, cut
        in event-time order before each row of a class beyond the head, which grows
        there: no row is scored by a head that knows a class not seen before it."""
        labels = mb.labels_numpy(batch)
        if labels is None or not self.config.grow_classes:
            yield learner, batch, labels
            return
        known = output_classes(learner.module.state_dict())
        if not np.any(labels >= known):
            yield learner, batch, labels
            return
        batch = mb.sort_by_time(batch)  # a new class: cut where it first comes
        labels = mb.labels_numpy(batch)
        assert labels is not None
        while True:
            beyond = np.flatnonzero(labels >= known)
            cut = int(beyond[0]) if len(beyond) else len(labels)
            if cut:
                yield learner, batch.slice(0, cut), labels[:cut]
            if cut == len(labels):
                return
            known = int(labels[cut]) + 1
            learner = self._grow(run, state, learner, known)
            batch, labels = batch.slice(cut), labels[cut:]

    def _grow(
        self, run: _Run, state: _ModelState, learner: IncrementalLearner, needed: int
    ) -> IncrementalLearner:
        """A learner that continues ``learner`` with its head grown to ``needed``
        classes (and a background learner grown alike)."""
        known = output_classes(learner.module.state_dict())
        state.num_classes = needed
        run.out.classes_added += needed - known
        grown = IncrementalLearner(self._factory(needed)(), self.config.learner)
        if output_classes(grown.module.state_dict()) != needed:
            msg = "grow_classes: the factory ignored num_classes= (the head did not grow)"
            raise ValueError(msg)
        grown.restore(grow_snapshot(learner.snapshot(copy_state=False), needed))
        if state.background is not None:
            state.background = grow_snapshot(state.background, needed)
        self._learner = grown
        return grown

    def _learn(
        self, learner: IncrementalLearner, x: np.ndarray, y: np.ndarray | None, *, predict: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Learn from the rows (in event-time order) in steps of at most ``step_rows``;
        with ``predict``, each step is predicted first (prequential) and the
        predictions are returned. Unlabelled rows are only predicted."""
        if y is None:
            return learner.predict(x) if predict else None
        return learner.learn_steps(x, y, self.config.step_rows or max(len(x), 1), predict=predict)

    def _adapt(
        self,
        run: _Run,
        state: _ModelState,
        learner: IncrementalLearner,
        errors: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
    ) -> None:
        """Feed a batch's prequential errors (in event-time order; ``x``, ``y``: its
        rows) to the step's detector; on a drift alarm, act as ``config.adapt`` says."""
        cfg = self.config
        if cfg.adapt == "none" or not len(errors):
            return
        if state.boost_left > 0:
            state.boost_left -= len(errors)
            if state.boost_left <= 0:
                learner.set_lr(cfg.learner.lr)
        detector = DETECTORS[cfg.adapt_detector]()
        if state.detector is not None:
            detector.restore(state.detector)
        alarms = detector.update_many(errors.astype(np.float64))
        state.detector = detector.snapshot()
        if cfg.adapt == "background":
            self._background(run, state, learner, alarms, errors, x, y)
            return
        if not len(alarms.drifts):
            return
        run.out.adaptations += 1
        if cfg.adapt == "reset":
            self._replace(state, learner, None)
        else:
            learner.set_lr(cfg.learner.lr * cfg.boost)
            state.boost_left = cfg.boost_samples

    def _replace(
        self, state: _ModelState, learner: IncrementalLearner, snapshot: dict[str, Any] | None
    ) -> None:
        """``learner`` continues as ``snapshot`` (another learner's), or afresh."""
        if snapshot is None:
            snapshot = IncrementalLearner(
                self._factory(state.num_classes)(), self.config.learner
            ).snapshot(copy_state=False)
        learner.restore(snapshot, copy_state=False)

    def _background(
        self,
        run: _Run,
        state: _ModelState,
        learner: IncrementalLearner,
        alarms: Alarms,
        errors: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
    ) -> None:
        """The background policy, as adaptive random forests run theirs: a warning
        starts a fresh learner beside the serving one, learning the rows after it; a
        drift alarm makes it the serving learner (afresh when there is none yet); a
        background learner that sees ``background_samples`` rows without an alarm was
        a false warning and is dropped."""
        cfg = self.config
        warnings = alarms.warnings
        if cfg.adapt_detector in WARNING_DETECTORS:  # no warnings of its own
            warn = WARNING_DETECTORS[cfg.adapt_detector]()
            if state.warning is not None:
                warn.restore(state.warning)
            warnings = warn.update_many(errors.astype(np.float64)).drifts
            state.warning = warn.snapshot()
        background: IncrementalLearner | None = None
        learn_from = 0
        if state.background is not None:
            background = IncrementalLearner(self._factory(state.num_classes)(), cfg.learner)
            background.restore(state.background, copy_state=False)
        elif len(warnings):
            background = IncrementalLearner(self._factory(state.num_classes)(), cfg.learner)
            learn_from, state.background_seen = int(warnings[0]) + 1, 0
            run.out.backgrounds += 1
        if background is not None and learn_from < len(x):
            self._learn(background, x[learn_from:], y[learn_from:], predict=False)
            state.background_seen += len(x) - learn_from
        if len(alarms.drifts):
            run.out.adaptations += 1
            self._replace(state, learner, None if background is None else background.snapshot())
            state.background = None
        elif background is not None and state.background_seen >= cfg.background_samples:
            state.background = None  # a false warning: no drift followed
        elif background is not None:
            state.background = background.snapshot(copy_state=False)

    def _window_done(
        self, run: _Run, state: _ModelState, learner: IncrementalLearner, start_us: int
    ) -> None:
        """A window's batches are learned: a new version valid from ``start_us`` (the
        next window's start) if the cadence says so, else the last one served on."""
        if state.since_publish and self._due(state, start_us):
            self._publish(run, state, learner, start_us)
        elif state.published is not None:
            run.out.updates.extend(self._serve_on(state, start_us))

    def _due(self, state: _ModelState, start_us: int) -> bool:
        cfg = self.config
        if state.published is None or state.since_publish >= cfg.publish_min_samples:
            return True
        every = cfg.publish_every_us
        if every is None or state.published_at is None:
            return False
        return start_us - state.published_at >= every

    def _published(self, state: _ModelState) -> ModelArtifact:
        """The last published version, rebuilt from the state."""
        assert state.published is not None
        version, data, width, until = state.published
        factory = self._factory(state.published_classes)  # the head it was published with
        if width is not None:
            factory = StandardizedFactory(factory, width)
        return ModelArtifact("state_dict", version, factory, data, until)

    def _publish(
        self, run: _Run, state: _ModelState, learner: IncrementalLearner, start_us: int
    ) -> None:
        """A new version, valid from ``start_us`` (the start of a window)."""
        state.version += 1
        state.since_publish = 0
        run.out.versions += 1
        module, factory = learner.export(self._factory(state.num_classes))
        artifact = ModelArtifact.from_module(
            module, state.version, factory=factory, trained_until_us=state.trained_until
        )
        width = factory.num_features if isinstance(factory, StandardizedFactory) else None
        assert artifact.data is not None
        state.published = (state.version, artifact.data, width, state.trained_until)
        state.published_classes = state.num_classes
        state.published_at = start_us
        run.out.updates.extend(self._stamps(artifact, start_us))
        state.carried_to = None

    # -- what each mode does ---------------------------------------------------------
    def _work(
        self,
        run: _Run,
        state: _ModelState,
        learner: IncrementalLearner,
        batch: pa.RecordBatch,
        labels: np.ndarray | None,
        start: int,
        late: bool,
    ) -> None:
        raise NotImplementedError

    def _stamps(self, artifact: ModelArtifact, start_us: int) -> list[Stamped]:
        raise NotImplementedError

    def _serve_on(self, state: _ModelState, start_us: int) -> list[Stamped]:
        """The last version again, for the window from ``start_us`` (none: a mode
        whose versions are not offered per window)."""
        return []

    def _finish(self, run: _Run) -> None:
        """After a window end's batches are done."""


def _first(item: tuple[tuple[int, int], pa.RecordBatch]) -> tuple[int, int]:
    return item[0]


class TrainingStep(OnlineStep):
    """Decoupled mode: learn, and publish each version for the windows after it."""

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        config: OnlineConfig,
        grid: WindowGrid,
        carry_windows: int = 16,
    ) -> None:
        super().__init__(factory, config, grid)
        if carry_windows <= 0:
            msg = f"carry_windows must be > 0, got {carry_windows!r}"
            raise ValueError(msg)
        self.carry_windows = carry_windows

    def _work(
        self,
        run: _Run,
        state: _ModelState,
        learner: IncrementalLearner,
        batch: pa.RecordBatch,
        labels: np.ndarray | None,
        start: int,
        late: bool,
    ) -> None:
        adapting = self.config.adapt != "none" and labels is not None
        features = mb.features_numpy(batch)
        scored = self._learn(learner, features, labels, predict=adapting)
        if adapting:
            assert scored is not None and labels is not None
            self._adapt(run, state, learner, scored[0] != labels, features, labels)

    def _stamps(self, artifact: ModelArtifact, start_us: int) -> list[Stamped]:
        # stamped at the start of the next window and carried forward, so a window
        # without a fresh version falls back on the newest of the previous ones
        size = self.grid.size_us
        return [(artifact, start_us + i * size) for i in range(self.carry_windows)]

    def _serve_on(self, state: _ModelState, start_us: int) -> list[Stamped]:
        # no new version: the last one again, carried as a publication is, so that
        # windows without data (no timer, nothing served from them) are covered too;
        # only to the windows its earlier stamps do not reach yet
        size = self.grid.size_us
        end = start_us + self.carry_windows * size
        assert state.published_at is not None
        reached = state.carried_to or state.published_at + self.carry_windows * size
        state.carried_to = max(reached, end)
        first = max(start_us, reached)
        if first >= end:
            return []
        artifact = self._published(state)
        return [(artifact, t) for t in range(first, end, size)]


class PrequentialStep(OnlineStep):
    """Coupled mode: predict each batch, then learn from it; window statistics."""

    def _work(
        self,
        run: _Run,
        state: _ModelState,
        learner: IncrementalLearner,
        batch: pa.RecordBatch,
        labels: np.ndarray | None,
        start: int,
        late: bool,
    ) -> None:
        features = mb.features_numpy(batch)
        if late:  # scored by the model as it was when this window began
            pred, conf, used = self._predict_as_of(state, start, features)
        else:
            self._remember(state, start, learner)
            scored = self._learn(learner, features, labels, predict=True)
            assert scored is not None
            (pred, conf), used = scored, state.version
        size = self.grid.size_us
        out = mb.scored_batch(batch, pred, conf, used)
        run.out.predictions.append((out, run.stamp(start, size, late)))
        correct = None if labels is None else pred == labels
        if correct is not None and not late:
            assert labels is not None
            self._adapt(run, state, learner, ~correct, features, labels)
        codes, keys = mb.key_codes(batch)
        if self.grid.framed:  # one stats row per window of the frame, and key
            times = mb.event_times_us(batch)
            codes, keys = by_window(codes, keys, times, self.grid.window_us, self.grid.offset_us)
        part = stats_of(codes, keys, score=conf, correct=correct, versions=used)
        run.tables.setdefault(start, StatsTable()).add(part)
        if late:
            self._learn(learner, features, labels, predict=False)

    def _stamps(self, artifact: ModelArtifact, start_us: int) -> list[Stamped]:
        return [(artifact, start_us)]

    def _finish(self, run: _Run) -> None:
        size = self.grid.size_us
        for start, table in sorted(run.tables.items()):
            late = run.late(start, size)
            pane = Pane.LATE if late else Pane.ON_TIME
            at = run.stamp(start, size, late)
            if self.grid.framed:
                rows = window_stats_rows(table.stats(), self.grid.window_us, pane, int(late))
            else:
                rows = stats_rows(table.stats(), start, start + size, pane, int(late))
            run.out.stats.append((rows, at))

    def _remember(self, state: _ModelState, start_us: int, learner: IncrementalLearner) -> None:
        """The model (weights and scaling) as it was when window ``start_us`` began,
        for late batches of that window; the latest ``grid.history_windows`` kept."""
        if start_us not in state.history:
            state.history[start_us] = (state.version, dumps_state(learner.inference_state()))
            for old in sorted(state.history)[: -self.grid.history_windows]:
                del state.history[old]

    def _predict_as_of(
        self, state: _ModelState, start_us: int, features: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Prediction by the model of window ``start_us``; version 0 (the untrained
        model, which has seen nothing) when that window is no longer remembered."""
        version, inference_state = state.history.get(start_us, (0, None))
        remembered = None if inference_state is None else loads_state(inference_state)
        # the model of that time, with the classes it had then (version 0: the
        # untrained model, as the factory builds it)
        then = None
        if remembered is not None and state.num_classes is not None:
            then = output_classes(remembered["module"])
        past = IncrementalLearner(self._factory(then)(), self.config.learner)
        if remembered is not None:
            past.load_inference_state(remembered)
        pred, conf = past.predict(features)
        return pred, conf, version
