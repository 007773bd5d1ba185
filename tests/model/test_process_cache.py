"""The bounded LRU map behind shared modules, live learners and keyed models."""

from __future__ import annotations

import pytest

from model.process_cache import LRU


def test_least_recently_used_goes_first():
    cache: LRU[str, int] = LRU(2)
    assert cache.put("a", 1) == 0 and cache.put("b", 2) == 0
    assert cache.get("a") == 1  # now b is the least recently used
    assert cache.put("c", 3) == 1
    assert list(cache.keys()) == ["a", "c"] and cache.get("b") is None
    assert cache.pop("a") == 1 and cache.pop("a") is None and len(cache) == 1
    cache.put("x1", 1)
    cache.drop(lambda k: k.startswith("x"))
    assert list(cache.keys()) == ["c"]
    with pytest.raises(ValueError, match="capacity must be > 0"):
        LRU(0)
