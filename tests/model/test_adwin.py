"""ADWIN: the C kernel and the Python reference alarm alike, in batches of any size, and
the detector finds known changes without alarming on a stationary stream."""

from __future__ import annotations

import numpy as np
import pytest

from model.adwin import ADWIN
from model.drift import DETECTORS, WARNING_DETECTORS, KeyedDrift
from model.learn.state_bytes import dumps_state, loads_state


def errors(seed: int, n: int = 6000, change: int | None = 3000, before=0.1, after=0.4):
    rng = np.random.default_rng(seed)
    rate = np.full(n, before) if change is None else np.where(np.arange(n) < change, before, after)
    return (rng.random(n) < rate).astype(float)


def alarms(detector: ADWIN, values: np.ndarray, batch: int) -> list[int]:
    found: list[int] = []
    for at in range(0, len(values), batch):
        found += (detector.update_many(values[at : at + batch]).drifts + at).tolist()
    return found


@pytest.fixture(scope="module")
def kernel():
    detector = ADWIN()
    if detector._lib is None:
        pytest.skip("no C compiler here: the Python reference alone runs")
    return detector


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("settings", [{}, {"clock": 1, "delta": 0.05}, {"max_buckets": 3}])
def test_the_kernel_and_the_python_reference_alarm_alike(kernel, seed, settings):
    # the same alarms, statistics and state, whatever the batches
    values = np.concatenate([errors(seed), errors(seed + 100, change=None, before=0.3)])
    native, python = ADWIN(**settings), ADWIN(use_native=False, **settings)
    found_native = alarms(native, values, batch=1_000)
    found_python = alarms(python, values, batch=37)
    assert found_native == found_python and found_native  # changes were found
    assert dumps_state(native.snapshot()) == dumps_state(python.snapshot())
    one_by_one = ADWIN(**settings)
    assert [i for i, v in enumerate(values) if one_by_one.update(float(v))] == found_native


def test_a_change_is_found_soon_and_a_stationary_stream_gives_no_alarm(kernel):
    delays = []
    for seed in range(20):
        found = alarms(ADWIN(), errors(seed), batch=256)
        assert all(i >= 3000 for i in found)  # nothing before the change
        delays.append(found[0] - 3000)
        assert not alarms(ADWIN(), errors(seed, change=None), batch=256)
    assert np.mean(delays) < 150  # abrupt 0.1 -> 0.4: River's ADWIN takes about 75


def test_snapshot_restore_continues_exactly(kernel):
    values = errors(3, n=9000, change=6000)
    original = ADWIN()
    original.update_many(values[:4321])
    restored = ADWIN(use_native=False)  # the state is the same for both paths
    restored.restore(loads_state(dumps_state(original.snapshot())))
    assert restored.width == original.width == 4321
    a = original.update_many(values[4321:])
    b = restored.update_many(values[4321:])
    assert a.drifts.tolist() == b.drifts.tolist() and len(a.drifts)
    np.testing.assert_array_equal(a.statistics, b.statistics)


def test_an_alarm_starts_the_window_afresh(kernel):
    detector = ADWIN()
    found = detector.update_many(errors(0))
    assert len(found.drifts) == 1 and detector.width == 6000 - found.drifts[0] - 1
    assert found.statistics[0] > 0.1 and len(found.warnings) == 0


@pytest.mark.parametrize(
    "settings",
    [{"delta": 0.0}, {"delta": 1.0}, {"clock": 0}, {"max_buckets": 1}, {"max_buckets": 17}],
)
def test_bad_settings_are_named(settings):
    with pytest.raises(ValueError, match="delta|clock"):
        ADWIN(**settings)


def test_adwin_is_a_detector_of_the_pipeline(kernel):
    assert isinstance(DETECTORS["adwin"](), ADWIN)
    assert WARNING_DETECTORS["adwin"]().delta > DETECTORS["adwin"]().delta  # warns first
    keyed = KeyedDrift("adwin")
    codes = np.array([0, 1] * 3000)
    values = np.where(codes == 0, errors(1), errors(2, change=None))
    found = keyed.update(["a", "b"], codes, np.arange(6000), values)
    assert {key for key, _, kind, _ in found if kind == 1} == {"a"}
    assert loads_state(dumps_state(keyed.states))  # its state travels as bytes
