"""The stateful DoFn around :class:`model.online.step.OnlineStep`, and what it reads
from its input.

The DoFn only adapts: the step's buffer is a bag of bytes, its book and model state
two values, its window ends one event-time timer per window (dynamic tags of one
timer family, so a runner delivers every timer the watermark passed together: a
bounded run's windows end in one bundle, not one bundle each). Everything the step
holds lives in Beam state, so the runner checkpoints it. The step object itself is
kept in this process between window ends (:data:`model.process_cache.PROCESS_CACHE`,
kind ``learner``): restoring it from bytes costs milliseconds per window end. It is
not dropped at ``teardown``: the streaming DirectRunner sets up and tears down a DoFn
for every bundle, and the cache's bound, not the DoFn's life, limits what it keeps.

On a bounded input (``drain``) the first window end works through every window
whose timer is set: a bounded PCollection's watermark passes its windows only once
its elements are all in, so they are, and the timers after it find nothing left.
Each window still gets its own version and statistics (the step takes several
windows in one call as it does when a runner delivers several timers together);
without it, each of W window ends would read the whole buffer, O(W^2).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BytesCoder
from apache_beam.transforms import window as bw
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Duration, Timestamp

from model import batch as mb
from model.artifact import ModelArtifact
from model.live import BOARD, LIVE_MODEL
from model.online.config import WindowGrid
from model.online.step import OnlineStep, StepSnapshot
from model.process_cache import PROCESS_CACHE
from model.vocabulary import NAMESPACE, Metric
from transforms.inference.memory_metrics import MemoryMetrics
from transforms.window.spec import FramedWindows, window_size_us

ONE_MODEL = ""  # the state key of the one model of a step that is not per key

# State and timer of the stateful step (module-level: Beam's parameter defaults).
# One write per batch (book) and one per window end (model): every write makes a
# state cache measure what it holds, so the step keeps few, small values.
_PENDING = BagStateSpec("pending", BytesCoder())
_BOOK = ReadModifyWriteStateSpec("book", BytesCoder())
_MODEL = ReadModifyWriteStateSpec("model", BytesCoder())
_READY = TimerSpec("ready", TimeDomain.WATERMARK)
PENDING = beam.DoFn.StateParam(_PENDING)
BOOK = beam.DoFn.StateParam(_BOOK)
MODEL = beam.DoFn.StateParam(_MODEL)
READY = beam.DoFn.TimerParam(_READY)


def window_grid(pcoll: beam.PCollection) -> WindowGrid:
    """The fixed windows and allowed lateness of ``pcoll``'s windowing, which the
    online step learns in (as Beam's ``BatchElements`` reads ``pcoll.windowing``)."""
    windowing = pcoll.windowing
    fn = windowing.windowfn
    if not isinstance(fn, bw.FixedWindows):
        msg = (
            "online learning learns window by window: its input needs fixed event-time "
            f"windows (e.g. EventTimeWindow(WindowSpec('fixed', ...))), got {fn!r}"
        )
        raise ValueError(msg)
    window_us = window_size_us(fn)
    return WindowGrid(
        size_us=fn.size.micros,
        offset_us=fn.offset.micros,
        allowed_lateness_us=windowing.allowed_lateness.micros,
        window_us=window_us if window_us < fn.size.micros else 0,
    )


def fixed_windows(grid: WindowGrid) -> bw.FixedWindows:
    """The Beam window function of ``grid`` (the one :func:`window_grid` read)."""
    offset = Timestamp(micros=grid.offset_us)
    if grid.framed:
        frame = grid.size_us // grid.window_us
        return FramedWindows(Duration(micros=grid.window_us), frame, offset)
    return bw.FixedWindows(Duration(micros=grid.size_us), offset)


def keyed_by_model(batches: beam.PCollection, per_key: bool) -> beam.PCollection:
    """``(model key, batch)`` pairs in the global window: the step's state spans all
    of time. Per key: the rows of each event key; otherwise one model for all."""
    windowed = batches | "GlobalWindow" >> beam.WindowInto(bw.GlobalWindows())
    keyed = beam.FlatMap(mb.split_by_key) if per_key else beam.Map(_one_model)
    # typed, so the state key gets a deterministic coder (strings), not a pickler
    return windowed | "KeyByModel" >> keyed.with_output_types(tuple[str, pa.RecordBatch])


def _one_model(batch: pa.RecordBatch) -> tuple[str, pa.RecordBatch]:
    return ONE_MODEL, batch


class OnlineStepDoFn(beam.DoFn):
    """Runs one :class:`OnlineStep` per model key. Outputs: the step's predictions
    (main), and its ``updates`` and ``stats`` (tagged), each stamped where the step
    says; ``per_key``: updates as ``(key, artifact)``, else the artifact alone."""

    def __init__(
        self,
        make_step: Callable[[], OnlineStep],
        *,
        per_key: bool,
        updates_tag: str | None,
        drain: bool = False,
    ) -> None:
        self._make_step = make_step
        self._per_key = per_key
        self._updates_tag = updates_tag
        self._drain = drain
        self._token = uuid.uuid4().hex  # survives pickling: names this step's learners

    def setup(self) -> None:
        self._learned = beam.metrics.Metrics.counter(NAMESPACE, Metric.SAMPLES_LEARNED)
        self._versions = beam.metrics.Metrics.counter(NAMESPACE, Metric.MODEL_VERSIONS)
        self._adaptations = beam.metrics.Metrics.counter(NAMESPACE, Metric.ADAPTATIONS)
        self._memory = MemoryMetrics("learning")

    def process(
        self,
        kv: tuple[str, pa.RecordBatch],
        pending: Any = PENDING,
        book: Any = BOOK,
        timer: Any = READY,
    ) -> Iterator[Any]:
        _, batch = kv
        step = self._make_step()  # a batch touches the book only: no model is built
        step.restore(StepSnapshot(book=book.read()))
        entry, fire_at = step.on_batch(batch)
        pending.add(entry)
        if fire_at is not None:
            timer.set(Timestamp(micros=fire_at), dynamic_timer_tag=str(fire_at))
        book.write(step.snapshot().book)
        return iter(())

    @on_timer(_READY)
    def on_ready(
        self,
        key: Any = beam.DoFn.KeyParam,
        tag: Any = beam.DoFn.DynamicTimerTagParam,
        pending: Any = PENDING,
        book: Any = BOOK,
        model: Any = MODEL,
    ) -> Iterator[Any]:
        # Taken out while it works (the cache's contract): a failed window end never
        # leaves a half-changed step behind for the retry.
        step = PROCESS_CACHE.take("learner", (self._token, key)) or self._make_step()
        step.restore(StepSnapshot(book=book.read(), model=model.read()))
        fired = int(tag)
        if self._drain and step.book.scheduled:
            fired = max(fired, max(step.book.scheduled))
        result = step.on_window_end(fired, pending.read())
        if result.keep is not None:
            pending.clear()
            for data in result.keep:
                pending.add(data)
        snapshot = step.snapshot()
        book.write(snapshot.book)
        if result.learned:
            model.write(snapshot.model)
        self._memory.report(step.memory_figures())
        PROCESS_CACHE.put("learner", (self._token, key), step)
        if not result.learned:
            return
        self._learned.inc(result.samples)
        self._versions.inc(result.versions)
        if result.adaptations:
            self._adaptations.inc(result.adaptations)
        for batch, at in result.predictions:
            yield bw.TimestampedValue(batch, Timestamp(micros=at))
        for artifact, at in result.updates:
            if isinstance(artifact, ModelArtifact):  # live queries score with the newest
                name = f"{LIVE_MODEL}/{key}" if self._per_key else LIVE_MODEL
                live = BOARD.get(name)
                if live is None or live.version < artifact.version:
                    BOARD.publish(name, artifact, position_us=at, version=artifact.version)
            value = (key, artifact) if self._per_key else artifact
            stamped = bw.TimestampedValue(value, Timestamp(micros=at))
            yield (
                stamped
                if self._updates_tag is None
                else beam.pvalue.TaggedOutput(self._updates_tag, stamped)
            )
        for row, at in result.stats:
            yield beam.pvalue.TaggedOutput("stats", bw.TimestampedValue(row, Timestamp(micros=at)))
