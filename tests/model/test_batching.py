"""The AIMD batch-size controller's snapshot: a restored controller sizes as the original."""

from __future__ import annotations

import numpy as np

from model.batching import AdaptiveBatchSize
from model.learn.state_bytes import dumps_state, loads_state


def feed(c: AdaptiveBatchSize, rng: np.random.Generator, n: int) -> list[int]:
    sizes = []
    for _ in range(n):
        if rng.random() < 0.05:
            c.on_oom(c.size)
        else:
            c.record(c.size, float(rng.uniform(0.0, 0.02)))
        sizes.append(c.size)
    return sizes


def test_snapshot_restore_continues_exactly():
    config = {"target_latency_s": 0.01, "initial": 64, "max_size": 1024, "step": 32}
    original = AdaptiveBatchSize(**config)
    feed(original, np.random.default_rng(0), 40)
    restored = AdaptiveBatchSize(**config)
    restored.restore(loads_state(dumps_state(original.snapshot())))
    assert feed(original, np.random.default_rng(1), 100) == feed(
        restored, np.random.default_rng(1), 100
    )
    assert restored.snapshot() == original.snapshot() and original.ooms > 0
