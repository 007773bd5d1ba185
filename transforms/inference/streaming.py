"""Streaming inference over micro-batches, with model hot swap from a side input.

:class:`StreamingInference` scores every micro-batch and emits, in its place, the
prediction rows: ``key``, ``event_time``, ``event_id`` and ``label`` when present,
``prediction``, ``score`` (probability of the predicted class) and ``model_version``.

- **Event time and windows are kept exactly.** Small micro-batches of a bundle are
  gathered into one forward pass (up to the adaptive size), and each comes back out
  with its own timestamp, window and pane (Beam's ``BatchElements`` instead stamps
  a whole batch at the window end).
- **Adaptive forward passes.** An AIMD controller sizes passes against a latency
  target and a maximum; CUDA out-of-memory splits a pass and lowers the ceiling
  without losing rows (:mod:`model.handler`).
- **Hot swap.** Model updates (``ModelArtifact`` objects, model-store paths or Beam
  ``ModelMetadata``) arrive as a side input; for each element the newest version in
  its side-input window wins, so with a side input windowed like the main input the
  model trained through window k scores window k+1, deterministically. A few recent
  versions stay loaded, so a late element is still scored by its own window's model.
  Every row says which version scored it; none is dropped or scored twice.
- **Memory control** (``memory``, :class:`model.memory_control.MemoryConfig`): a
  memory controller sizes the passes too, each measured against a budget.
- **Metrics** (namespace ``streaming_ml``): ``rows_scored``, ``batch_size`` and
  ``batch_latency_ms`` per forward pass, ``model_version`` (gauge), ``model_load_ms``,
  ``oom_splits``; under memory control ``memory_steps``, ``memory_over_budget``,
  ``memory_ooms``, ``memory_peak_bytes`` (each ``.scoring``).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import ModelMetadata
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration
from apache_beam.utils.windowed_value import WindowedValue

from model import batch as mb
from model.artifact import ModelArtifact
from model.batching import AdaptiveBatchSize
from model.device import resolve_device
from model.handler import TorchModelHandler
from model.live import BOARD, LIVE_MODEL
from model.memory_control import MemoryConfig, MemoryControl
from model.process_cache import PROCESS_CACHE
from model.vocabulary import NAMESPACE, Metric
from transforms.inference.memory_metrics import MemoryMetrics
from transforms.io.model_store import read_path, version_of_path

ModelUpdate = ModelArtifact | str | ModelMetadata


def update_version(update: ModelUpdate) -> int:
    if isinstance(update, ModelArtifact):
        return update.version
    path = update.model_id if isinstance(update, ModelMetadata) else update
    return version_of_path(path)


def resolve_update(update: ModelUpdate) -> ModelArtifact:
    if isinstance(update, ModelArtifact):
        return update
    return read_path(update.model_id if isinstance(update, ModelMetadata) else update)


class _Metrics:
    def __init__(self) -> None:
        m = beam.metrics.Metrics
        self.rows = m.counter(NAMESPACE, Metric.ROWS_SCORED)
        self.batch_size = m.distribution(NAMESPACE, Metric.BATCH_SIZE)
        self.latency = m.distribution(NAMESPACE, Metric.BATCH_LATENCY_MS)
        self.version = m.gauge(NAMESPACE, Metric.MODEL_VERSION)
        self.load = m.distribution(NAMESPACE, Metric.MODEL_LOAD_MS)
        self.ooms = m.counter(NAMESPACE, Metric.OOM_SPLITS)


class _InferenceDoFn(beam.DoFn):
    def __init__(
        self,
        artifact: ModelArtifact,
        device: str,
        batching: AdaptiveBatchSize,
        resident_versions: int,
        compile: bool | str,
        memory: MemoryConfig,
    ) -> None:
        self._initial = artifact
        self._device = device
        self._batching_cfg = batching
        self._resident = resident_versions
        self._compile = compile
        self._memory_cfg = memory
        self._token = uuid.uuid4().hex  # survives pickling: names this step

    def setup(self) -> None:
        self._metrics = _Metrics()
        self._memory_metrics = MemoryMetrics("scoring")
        # like the batch size, one memory control per step in this process
        self._memory: MemoryControl | None = None
        if self._memory_cfg.enabled:
            self._memory = PROCESS_CACHE.get_or_build(
                "memory", self._token, lambda: self._memory_cfg.build(resolve_device(self._device))
            )
        # One controller per step in this process (PROCESS_CACHE): a runner that sets
        # up a fresh DoFn copy per bundle must not restart it from its initial size;
        # copies of one step in other threads share it, as they share the device.
        self._batching = PROCESS_CACHE.get_or_build(
            "batch_size", self._token, lambda: dataclasses.replace(self._batching_cfg)
        )
        self._handlers: OrderedDict[int, TorchModelHandler] = OrderedDict()
        self._load_ms: list[int] = []  # reported from inside a bundle (setup has no metrics)
        self.start_bundle()
        self._handler_for(self._initial)

    def start_bundle(self) -> None:
        self._pending: dict[int, list[WindowedValue]] = {}
        self._pending_rows: dict[int, int] = {}

    def _handler_for(self, artifact: ModelArtifact) -> TorchModelHandler:
        handler = self._handlers.get(artifact.version)
        if handler is None:
            handler = TorchModelHandler(
                artifact,
                self._device,
                batching=self._batching,
                compile=self._compile,
                memory=self._memory,
            )
            self._load_ms.append(round(handler.stats.load_seconds * 1000))
            self._handlers[artifact.version] = handler
            live = BOARD.get(LIVE_MODEL)
            if live is None or live.version < artifact.version:  # for live queries
                BOARD.publish(LIVE_MODEL, artifact, version=artifact.version)
            self._evict(keep=artifact.version)
        self._handlers.move_to_end(artifact.version)
        return handler

    def _evict(self, keep: int) -> None:
        """Drop least recently used versions beyond the bound, never ``keep`` nor one
        with rows waiting to be scored."""
        idle = [v for v in self._handlers if v not in self._pending and v != keep]
        while len(self._handlers) > self._resident and idle:
            del self._handlers[idle.pop(0)]

    def _choose(self, updates: Iterable[ModelUpdate]) -> int:
        """The newest version among ``updates`` (or the initial one), loaded."""
        newest: ModelUpdate | None = None
        newest_version = self._initial.version
        for update in updates:
            version = update_version(update)
            if version > newest_version:
                newest, newest_version = update, version
        if newest_version in self._handlers:
            self._handlers.move_to_end(newest_version)
        else:
            self._handler_for(self._initial if newest is None else resolve_update(newest))
        return newest_version

    def process(
        self, batch: pa.RecordBatch, windowed: Any = beam.DoFn.WindowedValueParam
    ) -> Iterator[WindowedValue]:
        return self._buffer(batch, (), windowed)

    def _buffer(
        self, batch: pa.RecordBatch, updates: Iterable[ModelUpdate], windowed: WindowedValue
    ) -> Iterator[WindowedValue]:
        # The whole WindowedValue (all its windows, its pane) is kept and re-emitted:
        # asking for WindowParam would make Beam process the batch once per window.
        version = self._choose(updates)
        self._pending.setdefault(version, []).append(windowed)
        self._pending_rows[version] = self._pending_rows.get(version, 0) + batch.num_rows
        if self._pending_rows[version] >= self._batching.size:
            yield from self._flush(version)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for version in list(self._pending):
            yield from self._flush(version)

    def _flush(self, version: int) -> Iterator[WindowedValue]:
        items = self._pending.pop(version, [])
        self._pending_rows.pop(version, None)
        if not items:
            return
        handler = self._handlers[version]
        batches = [wv.value for wv in items]
        merged = batches[0] if len(batches) == 1 else mb.concat(batches)
        prediction, score = handler.predict(mb.features_tensor(merged))
        self._report(handler)
        BOARD.advance(LIVE_MODEL, int(mb.event_times_us(merged).max()))
        start = 0
        for wv, batch in zip(items, batches, strict=True):
            end = start + batch.num_rows
            out = mb.scored_batch(batch, prediction[start:end], score[start:end], version)
            yield WindowedValue(out, wv.timestamp, wv.windows, wv.pane_info)
            start = end

    def _report(self, handler: TorchModelHandler) -> None:
        sizes, seconds = handler.stats.drain()
        for size, sec in zip(sizes, seconds, strict=True):
            self._metrics.batch_size.update(size)
            self._metrics.latency.update(int(sec * 1000))
        self._metrics.rows.inc(sum(sizes))
        self._metrics.version.set(max(self._handlers))
        for ms in self._load_ms:
            self._metrics.load.update(ms)
        self._load_ms.clear()
        if handler.stats.oom_splits:
            self._metrics.ooms.inc(handler.stats.oom_splits)
            handler.stats.oom_splits = 0
        if self._memory is not None:
            self._memory_metrics.report(self._memory.figures.drain())


class _InferenceWithUpdatesDoFn(_InferenceDoFn):
    """With a windowed side input Beam calls ``process`` once per window of an element
    (each window may see another model), so use fixed or global windows here: with
    sliding windows every event would be scored once per window it belongs to."""

    def process(  # type: ignore[override]
        self,
        batch: pa.RecordBatch,
        updates: Iterable[ModelUpdate],
        windowed: Any = beam.DoFn.WindowedValueParam,
    ) -> Iterator[WindowedValue]:
        return self._buffer(batch, updates, windowed)


class StreamingInference(beam.PTransform):
    """Score micro-batches; optionally hot-swap models from a side input of updates.

    >>> from model.mlp import MLPClassifier
    >>> art = ModelArtifact.from_module(MLPClassifier(8, seed=0), version=0)
    >>> step = StreamingInference(art, device="cpu")

    ``updates``: a PCollection of ``ModelArtifact``, model-store paths or Beam
    ``ModelMetadata``; window it like the main input for leak-free swaps.
    """

    def __init__(
        self,
        artifact: ModelArtifact,
        *,
        device: str = "auto",
        updates: beam.PCollection | None = None,
        batching: AdaptiveBatchSize | None = None,
        resident_versions: int = 3,
        compile: bool | str = False,
        memory: MemoryConfig | None = None,
    ) -> None:
        super().__init__()
        if resident_versions <= 0:
            msg = f"resident_versions must be > 0, got {resident_versions!r}"
            raise ValueError(msg)
        fn_class = _InferenceDoFn if updates is None else _InferenceWithUpdatesDoFn
        self._fn = fn_class(
            artifact,
            device,
            batching or AdaptiveBatchSize(),
            resident_versions,
            compile,
            memory or MemoryConfig(),
        )
        self._updates = updates

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        side = [] if self._updates is None else [_UpdatesView(self._updates)]
        return batches | "Infer" >> beam.ParDo(self._fn, *side).with_output_types(pa.RecordBatch)


_EARLIEST = IntervalWindow(MIN_TIMESTAMP, MIN_TIMESTAMP + Duration(micros=1000))


class _UpdatesView(beam.pvalue.AsIter):
    """The model updates as an iterable side input whose window mapping also accepts a
    bundle without elements.

    Beam's streaming DirectRunner maps the window of a bundle's first element onto
    the side input before it processes the bundle; a bundle with no elements (a step
    upstream set all of its input aside, e.g. the lateness gate) has no window, the
    default mapping fails on ``None`` in a worker thread and the pipeline hangs. Such
    a bundle has nothing to score, so it is mapped onto the earliest window, ready at
    once; every real window is mapped as Beam maps it."""

    def __init__(self, pcoll: beam.PCollection) -> None:
        super().__init__(pcoll)
        # AsSideInput keeps its mapping here (and hands it to runners from here); a
        # Beam that kept it elsewhere would bring the hang back unseen: refuse it.
        mapping = getattr(self, "_window_mapping_fn", None)
        if mapping is None:
            msg = "this Beam's side inputs keep no _window_mapping_fn: update _UpdatesView"
            raise RuntimeError(msg)
        self._window_mapping_fn = _TolerantMapping(mapping)


@dataclasses.dataclass(frozen=True)
class _TolerantMapping:
    """A window mapping that maps "no window" onto the earliest window."""

    inner: Callable[[Any], Any]

    def __call__(self, window: Any) -> Any:
        return self.inner(_EARLIEST if window is None else window)
