"""A stateful step that sees a stream's batches one after the other, in order.

The lagged label and the drift detectors carry state from one batch to the next, so
what they compute depends on the order the batches come in. In a live stream that
is the order they arrive (what was known when). A bounded run has no such order: a
runner may hand a key's elements over in any order (Prism does). There this step
keeps the batches in a bag until the input is done (an event-time timer at the end
of the global window) and works through them in event-time order (their first
event time, then their first event id): every runner gives the same answer.

A worker is a plain object: ``restore(bytes | None)``, ``apply(batch) -> list of
outputs``, ``snapshot() -> bytes``; its state lives in Beam state between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import apache_beam as beam
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

from model import batch as mb

_STATE = ReadModifyWriteStateSpec("worker_state", BytesCoder())
_HELD = BagStateSpec("held_batches", BytesCoder())
_DONE = TimerSpec("input_done", TimeDomain.WATERMARK)
STATE = beam.DoFn.StateParam(_STATE)
HELD = beam.DoFn.StateParam(_HELD)
DONE = beam.DoFn.TimerParam(_DONE)
ONE_KEY = ""  # the whole stream is one state key: batches stay whole


class Worker(Protocol):
    def restore(self, data: bytes | None) -> None: ...

    def apply(self, element: Any) -> list[Any]: ...

    def snapshot(self) -> bytes: ...


class SequentialDoFn(beam.DoFn):
    """Runs a :class:`Worker` over ``(ONE_KEY, element)`` pairs; see the module
    docstring. ``bounded``: hold the elements (as ``encode`` writes them) and take
    them in ``order`` (default: batches in event-time order). Outputs are stamped by
    ``stamp(output, element)`` (microseconds)."""

    def __init__(
        self,
        make_worker: Callable[[], Worker],
        stamp: Callable[[Any, Any], int],
        *,
        bounded: bool,
        encode: Callable[[Any], bytes] = mb.encode_batch,
        decode: Callable[[bytes], Any] = mb.decode_batch,
        order: Callable[[Any], Any] = mb.order_key,
    ) -> None:
        self._make = make_worker
        self._stamp = stamp
        self._bounded = bounded
        self._encode, self._decode, self._order = encode, decode, order

    def setup(self) -> None:
        self._worker = self._make()

    def _run(self, batch: Any, state: Any) -> Iterator[bw.TimestampedValue]:
        self._worker.restore(state.read())
        outputs = self._worker.apply(batch)
        state.write(self._worker.snapshot())
        for out in outputs:
            yield bw.TimestampedValue(out, Timestamp(micros=self._stamp(out, batch)))

    def process(
        self,
        kv: tuple[str, Any],
        state: Any = STATE,
        held: Any = HELD,
        done: Any = DONE,
    ) -> Iterator[bw.TimestampedValue]:
        _, batch = kv
        if not self._bounded:
            yield from self._run(batch, state)
            return
        held.add(self._encode(batch))
        done.set(bw.GlobalWindow().max_timestamp())

    @on_timer(_DONE)
    def input_done(self, state: Any = STATE, held: Any = HELD) -> Iterator[bw.TimestampedValue]:
        batches = sorted((self._decode(data) for data in held.read()), key=self._order)
        held.clear()
        for batch in batches:
            yield from self._run(batch, state)


def keyed(element: Any) -> tuple[str, Any]:
    return ONE_KEY, element
