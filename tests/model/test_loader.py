"""The backpressured loader: never drops or duplicates, blocks the producer at its bound."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader

from model.loader import BackpressuredDataset, BackpressuredLoader, nbytes_of


def test_every_item_once_in_order() -> None:
    loader = BackpressuredLoader(iter(range(5000)), max_bytes=10_000, sizeof=lambda _: 64)
    assert list(loader) == list(range(5000))
    assert loader.stats.items == 5000 and loader.stats.bytes == 5000 * 64


def test_the_producer_blocks_at_the_bound_and_nothing_is_dropped() -> None:
    produced = 0
    lock = threading.Lock()

    def source():
        nonlocal produced
        for i in range(60):
            with lock:
                produced += 1
            yield torch.full((256,), float(i))  # 1 KiB each

    loader = BackpressuredLoader(source(), max_bytes=4096, max_depth=64, adaptive=False)
    ahead, seen = [], []
    for item in loader:
        time.sleep(0.002)  # a slow consumer
        with lock:
            ahead.append(produced - len(seen) - 1)
        seen.append(int(item[0]))
    assert seen == list(range(60))
    assert max(ahead) <= 5  # 4 in flight by credits, one more in the producer's hand
    assert loader.stats.peak_bytes_in_flight <= 4096
    assert loader.stats.producer_blocked_s > 0


def test_an_item_larger_than_the_budget_passes_alone() -> None:
    items = [torch.zeros(10), torch.zeros(10_000), torch.zeros(10)]
    loader = BackpressuredLoader(items, max_bytes=1000)
    assert [len(x) for x in loader] == [10, 10_000, 10]
    assert loader.stats.peak_bytes_in_flight == 40_000


def test_a_producer_error_reaches_the_consumer_where_it_happened() -> None:
    def source():
        yield 1
        yield 2
        raise KeyError("bad record")

    got = []
    with pytest.raises(KeyError, match="bad record"):
        for item in BackpressuredLoader(source(), max_bytes=100, sizeof=lambda _: 1):
            got.append(item)
    assert got == [1, 2]


def test_leaving_early_stops_the_producer() -> None:
    def endless():
        i = 0
        while True:
            yield i
            i += 1

    loader = BackpressuredLoader(endless(), max_bytes=100, sizeof=lambda _: 10)
    for item in loader:
        if item == 20:
            break
    assert loader._thread is not None
    loader._thread.join(timeout=5)
    assert not loader._thread.is_alive()


def test_prefetch_depth_follows_the_consumer() -> None:
    def slow_source():
        for i in range(40):
            time.sleep(0.004)
            yield i

    def depth_limit(consume_s: float) -> int:
        loader = BackpressuredLoader(slow_source(), max_bytes=1 << 20, sizeof=lambda _: 1)
        for _ in loader:
            time.sleep(consume_s)
        return loader.stats.depth_limits[-1]

    fast, slow = depth_limit(0.0005), depth_limit(0.04)
    assert fast > slow
    assert slow <= 2


def test_as_a_torch_dataset() -> None:
    dataset = BackpressuredDataset(lambda: (torch.tensor([i]) for i in range(7)), max_bytes=64)
    got = [int(x) for x in DataLoader(dataset, batch_size=None)]
    assert got == list(range(7))
    assert dataset.loader is not None and dataset.loader.stats.items == 7


def test_sizes_and_validation() -> None:
    assert nbytes_of({"a": torch.zeros(4), "b": [torch.zeros(2, dtype=torch.float64)]}) == 32
    with pytest.raises(ValueError, match="max_bytes"):
        BackpressuredLoader([], max_bytes=0)
    loader = BackpressuredLoader([1], max_bytes=10, sizeof=lambda _: 1)
    list(loader)
    with pytest.raises(RuntimeError, match="iterates once"):
        list(loader)
