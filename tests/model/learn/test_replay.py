"""The reservoir's snapshot: a restored reservoir samples exactly as the original."""

from __future__ import annotations

import numpy as np

from model.learn.replay import Reservoir
from model.learn.state_bytes import dumps_state, loads_state


def chunks(seed: int, n: int = 12):
    rng = np.random.default_rng(seed)
    for i in range(n):
        x = rng.standard_normal((37, 3)).astype(np.float32)
        yield x, np.arange(i * 37, (i + 1) * 37)


def test_snapshot_restore_continues_exactly():
    original = Reservoir(capacity=50, seed=0)
    for x, y in chunks(0, 4):
        original.add(x, y)
        original.sample(8)
    snap = original.snapshot()
    restored = Reservoir(capacity=50, seed=99)  # another seed: the state carries it
    restored.restore(loads_state(dumps_state(snap)))
    assert (restored.size, restored.seen) == (original.size, original.seen)
    for x, y in chunks(1):
        original.add(x, y)
        restored.add(x, y)
        a, b = original.sample(16), restored.sample(16)
        assert a is not None and b is not None
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    # the snapshot was a copy: the rows added since did not reach it
    assert len(snap["y"]) == 50 and snap["seen"] == 4 * 37


def test_an_empty_reservoir_round_trips():
    empty = Reservoir(capacity=10, seed=0)
    restored = Reservoir(capacity=10, seed=0)
    restored.restore(empty.snapshot())
    assert restored.sample(4) is None and restored.seen == 0
    x, y = next(chunks(2))
    empty.add(x, y)
    restored.add(x, y)
    np.testing.assert_array_equal(empty.y, restored.y)
