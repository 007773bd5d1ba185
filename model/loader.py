"""A backpressured loader: a bounded, credit-based prefetch queue.

Between a producer (decoding, collating, reading) and a training or inference step,
:class:`BackpressuredLoader` runs the producer in a thread and hands its items over
through a queue bounded in bytes and in depth:

- credits: each queued item holds its size in bytes (:func:`nbytes_of`) until the
  consumer takes it; the producer blocks while the credits are spent, so the bytes
  queued never exceed ``max_bytes`` (one item larger than that is let through alone;
  the item the consumer works on and the one the producer is making come on top),
  and nothing is ever dropped;
- depth follows the consumer: the queue may hold enough items to cover the slowest
  recent production at the consumer's recent pace (Little's law), plus one, up to
  ``max_depth``. A fast consumer gets deep prefetch; a slow one keeps little in flight;
- metrics: items, bytes, the depth at each take, the depth limit, the seconds the
  producer was blocked and the consumer waited (:class:`LoaderStats`);
- an error in the producer reaches the consumer at the item where it happened;
  leaving the loop early stops the producer.

:class:`BackpressuredDataset` is the same as a ``torch.utils.data.IterableDataset``,
for a ``DataLoader(dataset, batch_size=None)``.

>>> loader = BackpressuredLoader(range(5), max_bytes=1 << 10, sizeof=lambda _: 100)
>>> list(loader), loader.stats.items
([0, 1, 2, 3, 4], 5)
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils import _pytree as pytree
from torch.utils.data import IterableDataset

T = TypeVar("T")


def nbytes_of(item: Any) -> int:
    """Bytes of the tensors and arrays in ``item`` (any nesting); other leaves by
    ``sys.getsizeof``."""
    total = 0
    for leaf in pytree.tree_leaves(item):
        if isinstance(leaf, torch.Tensor):
            total += leaf.untyped_storage().nbytes()
        elif isinstance(leaf, np.ndarray):
            total += leaf.nbytes
        else:
            total += sys.getsizeof(leaf)
    return total


@dataclass
class LoaderStats:
    """Running figures of one pass over a :class:`BackpressuredLoader`."""

    items: int = 0
    bytes: int = 0
    peak_bytes_in_flight: int = 0
    producer_blocked_s: float = 0.0
    consumer_wait_s: float = 0.0
    depths: list[int] = field(default_factory=list)
    depth_limits: list[int] = field(default_factory=list)

    @property
    def max_depth(self) -> int:
        return max(self.depths, default=0)

    @property
    def mean_depth(self) -> float:
        return sum(self.depths) / len(self.depths) if self.depths else 0.0


_DONE = object()


class BackpressuredLoader(Generic[T]):
    """Iterates ``source`` through a bounded, credit-based prefetch thread."""

    def __init__(
        self,
        source: Iterable[T],
        *,
        max_bytes: int,
        max_depth: int = 64,
        sizeof: Callable[[T], int] = nbytes_of,
        adaptive: bool = True,
        window: int = 16,
    ) -> None:
        if max_bytes <= 0 or max_depth < 1 or window < 1:
            msg = (
                "need max_bytes > 0, max_depth >= 1 and window >= 1, got "
                f"{max_bytes!r}, {max_depth!r}, {window!r}"
            )
            raise ValueError(msg)
        self.source, self.max_bytes, self.max_depth = source, max_bytes, max_depth
        self.sizeof, self.adaptive = sizeof, adaptive
        self.stats = LoaderStats()
        self.depth_limit = max_depth if not adaptive else 2
        self._produce_s: deque[float] = deque(maxlen=window)
        self._consume_s: deque[float] = deque(maxlen=window)
        self._queue: deque[tuple[object, int]] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[T]:
        if self._thread is not None:
            msg = "a BackpressuredLoader iterates once; make a new one"
            raise RuntimeError(msg)
        self._thread = threading.Thread(target=self._produce, name="loader", daemon=True)
        self._thread.start()
        try:
            while True:
                item, _size = self._take()
                if item is _DONE:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                handed = time.perf_counter()
                yield item  # type: ignore[misc]
                self._consume_s.append(time.perf_counter() - handed)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer (it may be blocked on credits) and wait for it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _take(self) -> tuple[object, int]:
        start = time.perf_counter()
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait()
            if not self._queue:  # closed from another thread while waiting
                return _DONE, 0
            self.stats.depths.append(len(self._queue))
            self.stats.depth_limits.append(self.depth_limit)
            item, size = self._queue.popleft()
            self._in_flight -= size
            self._retune()
            self._cond.notify_all()
        self.stats.consumer_wait_s += time.perf_counter() - start
        return item, size

    def _retune(self) -> None:
        if not self.adaptive or not self._consume_s or not self._produce_s:
            return
        consume = max(sum(self._consume_s) / len(self._consume_s), 1e-6)
        need = math.ceil(max(self._produce_s) / consume) + 1
        self.depth_limit = max(1, min(self.max_depth, need))

    def _produce(self) -> None:
        iterator = iter(self.source)
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(iterator)
                except StopIteration:
                    self._put(_DONE, 0)
                    return
                size = int(self.sizeof(item))
                with self._cond:
                    self._produce_s.append(time.perf_counter() - start)
                if not self._put(item, size):
                    return
        except BaseException as error:  # the consumer re-raises it in its own thread
            self._put(_Failure(error), 0)

    def _put(self, item: object, size: int) -> bool:
        start = time.perf_counter()
        with self._cond:
            while not self._stop and self._queue and not self._fits(size):
                self._cond.wait()
            self.stats.producer_blocked_s += time.perf_counter() - start
            if self._stop:
                return False
            self._queue.append((item, size))
            self._in_flight += size
            if item is not _DONE and not isinstance(item, _Failure):
                self.stats.items += 1
                self.stats.bytes += size
            self.stats.peak_bytes_in_flight = max(self.stats.peak_bytes_in_flight, self._in_flight)
            self._cond.notify_all()
            return True

    def _fits(self, size: int) -> bool:
        return len(self._queue) < self.depth_limit and self._in_flight + size <= self.max_bytes


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class BackpressuredDataset(IterableDataset[Any]):
    """A :class:`BackpressuredLoader` over ``make_source()``, as a torch dataset; each
    iteration starts a fresh loader and keeps it in :attr:`loader` for its metrics."""

    def __init__(
        self,
        make_source: Callable[[], Iterable[Any]],
        *,
        max_bytes: int,
        max_depth: int = 64,
        sizeof: Callable[[Any], int] = nbytes_of,
    ) -> None:
        super().__init__()
        self.make_source = make_source
        self.max_bytes, self.max_depth, self.sizeof = max_bytes, max_depth, sizeof
        self.loader: BackpressuredLoader[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        self.loader = BackpressuredLoader(
            self.make_source(),
            max_bytes=self.max_bytes,
            max_depth=self.max_depth,
            sizeof=self.sizeof,
        )
        return iter(self.loader)
