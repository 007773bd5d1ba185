"""The running scaler: scaling before folding in, and its snapshot."""

from __future__ import annotations

import numpy as np

from model.learn.scaler import RunningScaler
from model.learn.state_bytes import dumps_state, loads_state


def batches(seed: int, n: int = 10):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield (rng.standard_normal((20, 4)) * 30 + 100).astype(np.float32)


def test_snapshot_restore_continues_exactly():
    original = RunningScaler()
    for x in batches(0, 3):
        original.update(x)
    restored = RunningScaler()
    restored.restore(loads_state(dumps_state(original.snapshot())))
    for x in batches(1):
        a = original.scale_and_fold(x, x)
        b = restored.scale_and_fold(x, x)
        assert a.tobytes() == b.tobytes()
    assert original.n == restored.n
    assert original.mean is not None and restored.mean is not None
    assert original.mean.tobytes() == restored.mean.tobytes()


def test_restore_copies_the_moments():
    # the C kernels update mean and m2 in place: a restored scaler must own them
    original = RunningScaler()
    original.update(next(batches(0)))
    restored = RunningScaler()
    restored.restore(original.snapshot())
    assert restored.mean is not original.mean and restored.m2 is not original.m2
    before = original.mean.copy() if original.mean is not None else None
    restored.update(next(batches(1)))
    np.testing.assert_array_equal(original.mean, before)


def test_scale_and_fold_uses_only_earlier_rows_once_it_has_them():
    scaler = RunningScaler()
    first, second = batches(0, 2)
    # nothing seen yet: the first batch is scaled by its own moments
    np.testing.assert_allclose(scaler.scale_and_fold(first, first).mean(axis=0), 0, atol=1e-5)
    before = RunningScaler()
    before.update(first)
    np.testing.assert_array_equal(scaler.scale_and_fold(second, second), before.transform(second))
    assert scaler.n == 40
