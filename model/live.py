"""Live state a running pipeline shares with whoever asks (Kafka Streams' interactive
queries, in one process): the steps publish what they hold, queries read it.

A step publishes an object under a name with the event-time position it reflects
(:meth:`LiveBoard.publish`) and changes it only inside :meth:`LiveEntry.lock`d work; a
query reads it the same way. :meth:`LiveBoard.wait_for` gives bounded staleness: the
entry once its position has reached a minimum (or None when ``timeout_s`` ran out, so
a query can fail fast with ``timeout_s=0``), as Kafka Streams' queries bound by
offsets. Plain Python: the transforms publish, the server (:mod:`pipelines.serve`)
reads.

>>> board = LiveBoard()
>>> entry = board.publish("model", {"v": 1}, position_us=10)
>>> board.wait_for("model", min_position_us=5, timeout_s=0).value
{'v': 1}
>>> board.wait_for("model", min_position_us=20, timeout_s=0) is None
True
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LiveEntry:
    """A published object, the event time (us) it reflects, and its lock."""

    value: Any
    position_us: int | None = None
    version: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


class LiveBoard:
    """Named live entries; waiters wake on every advance."""

    def __init__(self) -> None:
        self._entries: dict[str, LiveEntry] = {}
        self._changed = threading.Condition()

    def publish(
        self, name: str, value: Any, *, position_us: int | None = None, version: int = 0
    ) -> LiveEntry:
        """Put (or replace) ``value`` under ``name``."""
        with self._changed:
            entry = self._entries.get(name)
            if entry is None:
                entry = self._entries[name] = LiveEntry(value, position_us, version)
            else:
                with entry.lock:
                    entry.value, entry.position_us, entry.version = value, position_us, version
            self._changed.notify_all()
            return entry

    def advance(self, name: str, position_us: int, version: int | None = None) -> None:
        """The entry now reflects the stream up to ``position_us``."""
        with self._changed:
            entry = self._entries.get(name)
            if entry is None:
                return
            if entry.position_us is None or position_us > entry.position_us:
                entry.position_us = position_us
            if version is not None:
                entry.version = version
            self._changed.notify_all()

    def get(self, name: str) -> LiveEntry | None:
        return self._entries.get(name)

    def wait_for(
        self, name: str, *, min_position_us: int | None = None, timeout_s: float = 0.0
    ) -> LiveEntry | None:
        """The entry once it exists and its position is at least ``min_position_us``;
        None if that has not happened within ``timeout_s``."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._changed:
            while True:
                entry = self._entries.get(name)
                ready = entry is not None and (
                    min_position_us is None
                    or (entry.position_us is not None and entry.position_us >= min_position_us)
                )
                if ready:
                    return entry
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def clear(self) -> None:
        with self._changed:
            self._entries.clear()


BOARD = LiveBoard()  # this process's board
LIVE_MODEL = "model"  # the newest model version (a ModelArtifact) scoring in this process
