"""A bounded, thread-safe map that forgets the least recently used entries.

>>> cache = LRU(2)
>>> cache.put("a", 1), cache.put("b", 2), cache.get("a"), cache.put("c", 3)
(0, 0, 1, 1)
>>> list(cache.keys())
['a', 'c']
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            msg = f"capacity must be > 0, got {capacity!r}"
            raise ValueError(msg)
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def pop(self, key: K) -> V | None:
        """Take the value out (None if absent)."""
        with self._lock:
            return self._items.pop(key, None)

    def put(self, key: K, value: V) -> int:
        """Store ``value`` as the most recently used; how many entries were evicted."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            evicted = 0
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                evicted += 1
            return evicted

    def drop(self, which: Callable[[K], bool]) -> None:
        """Forget every entry whose key ``which`` accepts."""
        with self._lock:
            for key in [k for k in self._items if which(k)]:
                del self._items[key]

    def keys(self) -> Iterator[K]:
        """Keys, least recently used first (a snapshot)."""
        with self._lock:
            return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)
