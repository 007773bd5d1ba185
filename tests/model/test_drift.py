"""The Page-Hinkley detector's snapshot: a restored detector alarms exactly as the original."""

from __future__ import annotations

import numpy as np

from model.drift import PageHinkley
from model.learn.state_bytes import dumps_state, loads_state


def test_snapshot_restore_continues_exactly():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 0.2, 300), rng.uniform(0.5, 0.9, 300)] * 2)
    original = PageHinkley(delta=0.01, threshold=1.0)
    for v in values[:250]:
        original.update(float(v))
    restored = PageHinkley(delta=0.01, threshold=1.0)
    restored.restore(loads_state(dumps_state(original.snapshot())))
    a = [original.update(float(v)) for v in values[250:]]
    b = [restored.update(float(v)) for v in values[250:]]
    assert a == b and sum(a) >= 2  # the drifts are found, at the same values
    assert restored.snapshot() == original.snapshot()


def test_the_snapshot_is_the_running_statistics_only():
    ph = PageHinkley()
    ph.update(0.5)
    assert set(ph.snapshot()) == {"n", "mean", "cumulative", "minimum"}
