"""The Page-Hinkley detector's snapshot: a restored detector alarms exactly as the original."""

from __future__ import annotations

import numpy as np
import pytest

from model.drift import DDM, PageHinkley
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


def _errors(seed: int, n: int = 4000, change: int = 2000, before=0.1, after=0.4):
    rng = np.random.default_rng(seed)
    rate = np.where(np.arange(n) < change, before, after)
    return (rng.random(n) < rate).astype(float)


def _ddm_reference(errors, warning=2.0, drift=3.0, min_samples=30):
    """DDM one error at a time, as Gama et al. write it (a plain loop)."""
    import math

    n, k, p_min, s_min = 0, 0.0, math.inf, math.inf
    drifts, warnings = [], []
    for i, e in enumerate(errors):
        n += 1
        k += e
        p = k / n
        s = math.sqrt(p * (1 - p) / n)
        if n < min_samples:
            continue
        if p + s <= p_min + s_min:
            p_min, s_min = p, s
        if s_min > 0 and p + s > p_min + drift * s_min:
            drifts.append(i)
            n, k, p_min, s_min = 0, 0.0, math.inf, math.inf
        elif s_min > 0 and p + s > p_min + warning * s_min:
            warnings.append(i)
    return drifts, warnings


@pytest.mark.parametrize("seed", range(4))
def test_ddm_in_batches_alarms_where_the_one_at_a_time_method_does(seed):
    errors = _errors(seed)
    want_drifts, want_warnings = _ddm_reference(errors)
    ddm = DDM()
    drifts, warnings, at = [], [], 0
    rng = np.random.default_rng(seed)
    while at < len(errors):  # micro-batches of any size, state carried between them
        size = int(rng.integers(1, 300))
        alarms = ddm.update_many(errors[at : at + size])
        drifts += (alarms.drifts + at).tolist()
        warnings += (alarms.warnings + at).tolist()
        at += size
    assert drifts == want_drifts and warnings == want_warnings
    assert any(d >= 2000 for d in drifts)  # the change is found


@pytest.mark.parametrize("alpha", [1.0, 0.9999])
@pytest.mark.parametrize("seed", range(4))
def test_page_hinkley_in_batches_alarms_where_it_does_one_value_at_a_time(seed, alpha):
    errors = np.concatenate([_errors(seed)] * 3)  # longer than a vectorized piece
    one = PageHinkley(delta=0.005, threshold=20.0, alpha=alpha)
    want = [i for i, e in enumerate(errors) if one.update(float(e))]
    many = PageHinkley(delta=0.005, threshold=20.0, alpha=alpha)
    got, at = [], 0
    for size in np.random.default_rng(seed).integers(1, 9000, size=100):
        got += (many.update_many(errors[at : at + size]).drifts + at).tolist()
        at += int(size)
        if at >= len(errors):
            break
    assert got == want and any(g >= 2000 for g in got)


def test_ddm_snapshot_restore_continues_exactly():
    errors = _errors(7)
    a, b = DDM(), DDM()
    a.update_many(errors[:1500])
    b.restore(loads_state(dumps_state(a.snapshot())))
    assert (
        a.update_many(errors[1500:]).drifts.tolist() == b.update_many(errors[1500:]).drifts.tolist()
    )


def test_ddm_keeps_no_minimum_from_before_its_first_samples():
    # a first micro-batch shorter than min_samples, all right: it must not become the
    # lowest error rate (p = s = 0 would never let the detector fire)
    errors = _errors(3)
    whole = DDM().update_many(errors).drifts.tolist()
    split = DDM()
    first = split.update_many(errors[:5]).drifts.tolist()
    rest = (split.update_many(errors[5:]).drifts + 5).tolist()
    assert first + rest == whole and whole
