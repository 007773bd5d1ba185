"""Bounded, thread-safe maps: :class:`LRU`, and the per-process :data:`PROCESS_CACHE`.

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
from typing import Any, Generic, TypeVar

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


class ProcessCache:
    """What steps keep between bundles in this process, under one contract.

    A runner may set up a fresh copy of a DoFn for every bundle (Beam's streaming
    DirectRunner does), and several copies of one step may run in threads of one
    process. What is slow to rebuild and safe to keep (a model built on its device, a
    batch-size controller that has learned the device's speed, a learner decoded from
    its Beam state) is kept here instead of on the DoFn, under a key that names its
    step (a token made when the step is built, which survives pickling) or its content
    (a fingerprint). The contract every user keeps:

    1. A value here is never the only copy of anything: it can always be rebuilt
       (from Beam state, from an artifact, from a config). An evicted entry, a new
       process or a restored checkpoint costs a rebuild, never a different result.
    2. A value is used read-only (built modules run in inference mode); or shared on
       purpose by the copies of the one step that owns it, where a lost update costs
       nothing but time (a batch-size controller: plain counters, adapted again by
       the next pass); or taken out with :meth:`take` by one user at a time and put
       back only when consistent again (a learner, after a window end completed),
       so a failure never leaves one half changed here.
    3. Each kind of value has its own bound (``limits``); least recently used go first.

    >>> cache = ProcessCache({"module": 2})
    >>> cache.get_or_build("module", "a", lambda: 1), cache.get_or_build("module", "a", lambda: 2)
    (1, 1)
    >>> cache.take("module", "a"), cache.get("module", "a")
    (1, None)
    """

    def __init__(self, limits: dict[str, int]) -> None:
        self._kinds: dict[str, LRU[Hashable, object]] = {k: LRU(n) for k, n in limits.items()}

    def _of(self, kind: str) -> LRU[Hashable, object]:
        try:
            return self._kinds[kind]
        except KeyError:
            msg = f"unknown process cache kind {kind!r}; kinds: {sorted(self._kinds)}"
            raise KeyError(msg) from None

    def get(self, kind: str, key: Hashable) -> Any:
        """The value (now the most recently used of its kind), or None."""
        return self._of(kind).get(key)

    def put(self, kind: str, key: Hashable, value: object) -> int:
        """Keep ``value``; how many entries of its kind were evicted for it."""
        return self._of(kind).put(key, value)

    def take(self, kind: str, key: Hashable) -> Any:
        """Take the value out (None if absent): the caller owns it until it puts it back."""
        return self._of(kind).pop(key)

    def get_or_build(self, kind: str, key: Hashable, build: Callable[[], V]) -> V:
        """The value kept under ``key``, built (and kept) first if there is none."""
        value = self.get(kind, key)
        if value is None:
            value = build()
            self.put(kind, key, value)
        return value

    def drop(self, kind: str, which: Callable[[Any], bool]) -> None:
        """Forget every entry of ``kind`` whose key ``which`` accepts."""
        self._of(kind).drop(which)

    def size(self, kind: str) -> int:
        return len(self._of(kind))

    def limit(self, kind: str) -> int:
        return self._of(kind).capacity


# Built modules by artifact fingerprint and device; batch-size controllers and memory
# controls by step; live learners by (step, model key).
PROCESS_CACHE = ProcessCache({"module": 8, "batch_size": 256, "memory": 256, "learner": 64})
