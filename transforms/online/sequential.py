"""A step that sees a stream's elements one after the other, in order.

The lagged label and the drift detectors carry state from one batch to the next, so
what they compute depends on the order the batches come in. In a live stream that
is the order they arrive (what was known when): a stateful DoFn on one state key,
its worker's state in Beam state. A bounded run has no such order: a runner may
hand a key's elements over in any order (Prism does). There :class:`Sequential`
groups the whole input (one key) and works through it in ``order`` (batches: their
first event time, then their first event id): every runner gives the same answer.
(A timer at the end of the global window would do the same with state; Beam's
FnApiRunner drops the output of such a chain of timer steps.)

A worker is a plain object: ``restore(bytes | None)``, ``apply(element) -> list of
outputs``, ``snapshot() -> bytes``. :class:`LiveStateWorker` is one whose state is a
single object the process keeps decoded between elements.

By default the whole stream is one state key. With ``split`` (an element to its
``(state key, part)`` pairs, e.g. a micro-batch to one part per event key), each state
key has its own state and its own order, and different keys can run on different
workers: a worker's ``restore`` then gets the state of the key whose part ``apply``
gets next.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import apache_beam as beam
import pyarrow as pa
from apache_beam.coders import BytesCoder
from apache_beam.transforms import window as bw
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec
from apache_beam.utils.timestamp import Timestamp

from model import batch as mb
from model.process_cache import PROCESS_CACHE

_STATE = ReadModifyWriteStateSpec("worker_state", BytesCoder())
STATE = beam.DoFn.StateParam(_STATE)
ONE_KEY = ""  # the whole stream is one state key: batches stay whole


TOKEN = 16  # bytes of the random token that starts a LiveStateWorker's state


class LiveStateWorker:
    """A :class:`Worker` whose state is one object (a model), kept decoded.

    Writing the state each element is the price of a checkpoint; decoding it each
    element need not be. The process keeps the object (``PROCESS_CACHE``, kind
    ``learner``, under ``(step, class name)``: a runner may set up a fresh DoFn per
    bundle) with the random token its state was last written with, and uses it while
    the state read is that one; after a restore, or another worker's write, it is
    decoded again. Subclasses give :meth:`fresh`, :meth:`decode`, :meth:`encode` and
    :meth:`work`; ``self.live`` is the object.
    """

    def __init__(self, step: str) -> None:
        self.step = step
        self.live: Any = None
        self.token = b""
        self.state: bytes | None = None

    def fresh(self) -> Any:
        """The object before any element."""
        raise NotImplementedError

    def decode(self, state: Any) -> Any:
        """The object from what :meth:`encode` gave."""
        raise NotImplementedError

    def encode(self) -> Any:
        """``self.live`` as something picklable."""
        raise NotImplementedError

    def work(self, element: Any) -> list[Any]:
        """:meth:`Worker.apply` on ``self.live``."""
        raise NotImplementedError

    def _cache_key(self) -> tuple[str, str]:
        return (self.step, type(self).__name__)

    def restore(self, data: bytes | None) -> None:
        self.state = data
        current = b"" if data is None else data[:TOKEN]
        cached = PROCESS_CACHE.take("learner", self._cache_key())
        if cached is not None and cached[0] == current:
            self.token, self.live = cached  # what this process wrote last: that state
            return
        self.live = self.fresh() if data is None else self.decode(pickle.loads(data[TOKEN:]))
        self.token = current

    def apply(self, element: Any) -> list[Any]:
        if self.live is None:
            self.restore(self.state)
        self.token = b""  # changing: not the state written any more
        return self.work(element)

    def snapshot(self) -> bytes:
        self.token = os.urandom(TOKEN)
        PROCESS_CACHE.put("learner", self._cache_key(), (self.token, self.live))
        return self.token + pickle.dumps(self.encode(), protocol=5)


def at_first_event(out: pa.RecordBatch, element: Any) -> int:
    """A stamp: the output batch's first event time."""
    return mb.min_event_time_us(out)


class Worker(Protocol):
    def restore(self, data: bytes | None) -> None: ...

    def apply(self, element: Any) -> list[Any]: ...

    def snapshot(self) -> bytes: ...


Stamp = Callable[[Any, Any], int]


def _stamped(outputs: list[Any], element: Any, stamp: Stamp) -> Iterator[bw.TimestampedValue]:
    for out in outputs:
        yield bw.TimestampedValue(out, Timestamp(micros=stamp(out, element)))


class _LiveDoFn(beam.DoFn):
    def __init__(self, make_worker: Callable[[], Worker], stamp: Stamp) -> None:
        self._make = make_worker
        self._stamp = stamp

    def setup(self) -> None:
        self._worker = self._make()

    def process(self, kv: tuple[str, Any], state: Any = STATE) -> Iterator[bw.TimestampedValue]:
        _, element = kv
        self._worker.restore(state.read())
        outputs = self._worker.apply(element)
        state.write(self._worker.snapshot())
        yield from _stamped(outputs, element, self._stamp)


class _InOrderDoFn(beam.DoFn):
    def __init__(
        self, make_worker: Callable[[], Worker], stamp: Stamp, order: Callable[[Any], Any]
    ) -> None:
        self._make = make_worker
        self._stamp = stamp
        self._order = order

    def process(self, grouped: tuple[str, Iterable[Any]]) -> Iterator[bw.TimestampedValue]:
        worker = self._make()
        worker.restore(None)
        for element in sorted(grouped[1], key=self._order):
            yield from _stamped(worker.apply(element), element, self._stamp)


def keyed(element: Any) -> Iterator[tuple[str, Any]]:
    yield ONE_KEY, element


class Sequential(beam.PTransform):
    """Run a :class:`Worker` over the elements of a PCollection (in the global
    window) one after the other; see the module docstring. Outputs are stamped by
    ``stamp(output, element)`` (microseconds); ``element_type``: the elements' type
    (for their coder)."""

    def __init__(
        self,
        make_worker: Callable[[], Worker],
        stamp: Stamp,
        *,
        element_type: Any,
        output_type: Any,
        order: Callable[[Any], Any] = mb.order_key,
        split: Callable[[Any], Iterable[tuple[str, Any]]] = keyed,
    ) -> None:
        super().__init__()
        self._split = split
        self._make = make_worker
        self._stamp = stamp
        self._element_type = element_type
        self._output_type = output_type
        self._order = order

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        keyed_elements = elements | "Key" >> beam.FlatMap(self._split).with_output_types(
            tuple[str, self._element_type]  # type: ignore[name-defined]
        )
        if not elements.is_bounded:
            step = _LiveDoFn(self._make, self._stamp)
            return keyed_elements | "Live" >> beam.ParDo(step).with_output_types(self._output_type)
        step_in_order = _InOrderDoFn(self._make, self._stamp, self._order)
        return (
            keyed_elements
            | "All" >> beam.GroupByKey()
            | "InOrder" >> beam.ParDo(step_in_order).with_output_types(self._output_type)
        )
