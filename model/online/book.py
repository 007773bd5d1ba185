"""The batches an online step holds until their window ends, and its book of them.

The caller keeps the entries in an append-only buffer (Beam's bag state), as bytes:
a header (the end of the entry's window and a serial number), then the batch as
Arrow IPC. A state cache weighs what it holds: cheap for bytes, slow for Arrow
objects. A firing reads headers only.

A buffer can only be cleared whole, so :class:`Book` notes the serials already
worked through while entries of later windows still wait, instead of rewriting the
waiting ones at every firing (in a bounded run every batch waits before the first
firing: rewriting them each time would be quadratic). Once the entries taken are at
least as many as the waiting ones, the buffer is rewritten to the waiting ones only:
each entry is rewritten a bounded number of times on average, and the buffer never
holds more than about twice what waits (in a live stream: the current windows).

>>> import numpy as np
>>> from model import batch as mb
>>> book = Book()
>>> data = book.add(mb.make_batch(["a"], [5], np.zeros((1, 1))), end_us=10_000)
>>> book.take_ready([data], fired_us=10_000 - MS) == ([data], [])
True
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from model import batch as mb
from model.online.config import WindowGrid

MS = 1000  # one millisecond in microseconds: the resolution of runner timestamps
_HEADER = struct.Struct(">qq")  # window end (us), serial


def entry_header(data: bytes) -> tuple[int, int]:
    """``(window end, serial)`` of a buffered entry."""
    return _HEADER.unpack_from(data)


def entry_batch(data: bytes) -> pa.RecordBatch:
    """The batch of a buffered entry."""
    return mb.decode_batch(pa.py_buffer(data)[_HEADER.size :])


@dataclass
class Book:
    """The next serial, the serials already worked through while others still wait,
    and the firing times whose timers are set (one per window: its end, less 1 ms)."""

    serial: int = 0
    done: frozenset[int] = frozenset()
    scheduled: frozenset[int] = frozenset()

    def add(self, batch: pa.RecordBatch, end_us: int) -> bytes:
        """The buffer entry of ``batch``, whose window ends at ``end_us``."""
        data = _HEADER.pack(end_us, self.serial) + mb.encode_batch(batch)
        self.serial += 1
        return data

    def schedule(self, fire_us: int) -> bool:
        """Note a timer at ``fire_us``; False if one is set already."""
        if fire_us in self.scheduled:
            return False
        self.scheduled = self.scheduled | {fire_us}
        return True

    def take_ready(
        self, entries: Iterable[bytes], fired_us: int
    ) -> tuple[list[bytes], list[bytes] | None]:
        """The entries whose window ended by ``fired_us`` (a firing), and what the
        buffer must be rewritten to (None: leave it as it is); see the module
        docstring. Every timer at or before ``fired_us`` is done with: its window's
        entries are taken now (a timer of a later window end may take several)."""
        self.scheduled = frozenset(t for t in self.scheduled if t > fired_us)
        ready: list[bytes] = []
        taken: list[int] = []
        waiting: list[bytes] = []
        for data in entries:
            end, serial = entry_header(data)
            if serial in self.done:
                continue
            if end - MS <= fired_us:
                ready.append(data)
                taken.append(serial)
            else:
                waiting.append(data)
        if not waiting:
            self.done = frozenset()
            return ready, []
        if len(self.done) + len(taken) >= len(waiting):
            self.done = frozenset()
            return ready, waiting
        self.done = self.done.union(taken)
        return ready, None

    def snapshot(self) -> bytes:
        values = [self.serial, len(self.done), *sorted(self.done), *sorted(self.scheduled)]
        return np.array(values, dtype=">i8").tobytes()

    def restore(self, data: bytes | None) -> None:
        """Continue from :meth:`snapshot`'s bytes (None: an empty book)."""
        if data is None:
            self.serial, self.done, self.scheduled = 0, frozenset(), frozenset()
            return
        values = np.frombuffer(data, dtype=">i8").tolist()
        serial, n_done = values[0], values[1]
        self.serial = serial
        self.done = frozenset(values[2 : 2 + n_done])
        self.scheduled = frozenset(values[2 + n_done :])


def split_at_windows(batch: pa.RecordBatch, grid: WindowGrid) -> list[pa.RecordBatch]:
    """``batch`` cut into one piece per window of ``grid`` its rows fall in (row order
    kept within a piece): the step learns window by window, so a batch that spans
    windows (labels joined long after their events) must not be learned whole in
    its earliest one."""
    if not batch.num_rows:
        return []
    windows = (mb.event_times_us(batch) - grid.offset_us) // grid.size_us
    if (windows == windows[0]).all():
        return [batch]
    order = np.argsort(windows, kind="stable")
    ordered, cells = mb.take(batch, order), windows[order]
    cuts = [0, *(np.flatnonzero(np.diff(cells)) + 1).tolist(), len(cells)]
    return [ordered.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
