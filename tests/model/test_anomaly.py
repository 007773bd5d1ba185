"""Streaming anomaly detectors and NAB's scoring rules."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from model.anomaly.detectors import HOUR_US, Forecast, KeyDetector, RobustZ, Surprise
from model.anomaly.nab import (
    PROFILES,
    Series,
    Tally,
    best_threshold,
    normalized,
    scaled_sigmoid,
    score,
)

STANDARD = PROFILES["standard"]


# -- NAB scoring, by hand --------------------------------------------------------------
def _series() -> Series:
    return Series(points=100, windows=((50, 59),))  # probation: the first 15 points


def test_the_scaled_sigmoid_as_nab_defines_it():
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0


def test_the_earliest_alarm_in_a_window_scores_the_full_weight():
    tally = score(_series(), np.array([50, 55]), STANDARD)  # the second alarm adds nothing
    assert (tally.raw, tally.detected, tally.false_alarms) == (pytest.approx(1.0), 1, 0)
    assert normalized([tally], STANDARD) == pytest.approx(100.0)


def test_a_late_alarm_scores_less_and_a_miss_costs_the_fn_weight():
    late = score(_series(), np.array([59]), STANDARD)  # y = -(59 - 59 + 1) / 10
    assert late.raw == pytest.approx((2 / (1 + math.exp(-0.5)) - 1) / scaled_sigmoid(-1.0))
    missed = score(_series(), np.array([], dtype=np.int64), PROFILES["reward_low_FN_rate"])
    assert missed.raw == -2.0
    assert normalized([missed], PROFILES["reward_low_FN_rate"]) == 0.0


def test_false_alarms_cost_by_their_distance_from_the_window_before():
    before = score(_series(), np.array([20]), STANDARD)  # no window before it: -A_FP
    assert before.raw == pytest.approx(-1.0 - 0.11) and before.false_alarms == 1
    assert normalized([before], STANDARD) == pytest.approx(100 * (-1.11 + 1) / 2)
    after = score(_series(), np.array([50, 69]), STANDARD)  # 10 points past, width 10
    assert after.raw == pytest.approx(1.0 + 0.11 * scaled_sigmoid(10 / 9))
    low_fp = score(_series(), np.array([20]), PROFILES["reward_low_FP_rate"])
    assert low_fp.raw == pytest.approx(-1.22)


def test_alarms_in_the_probation_are_not_scored():
    tally = score(_series(), np.array([3, 10, 14]), STANDARD)
    assert (tally.raw, tally.false_alarms) == (-1.0, 0)


def test_windows_are_placed_by_time():
    times = np.arange(0, 1000, 10)
    series = Series.from_times(times, [(495, 590), (2000, 3000)])  # the second: no points
    assert series.windows == ((50, 59),) and series.probation == 15


def test_the_best_threshold_is_one_of_the_scores_and_may_be_no_alarm():
    scores = np.zeros(100)
    scores[[30, 52, 80]] = [0.9, 0.5, 0.3]  # a false alarm, the window's, one past it
    # two quantiles only (the top 10%: 0, the top 0.001%: ~0.9): the scores decide
    level, best = best_threshold([(_series(), scores)], STANDARD, candidates=2)
    y = -(59 - 52 + 1) / 10
    hand = -0.11 + scaled_sigmoid(y) / scaled_sigmoid(-1.0)  # 0.9's false alarm, the hit
    assert level == 0.5
    assert best == pytest.approx(normalized([Tally(hand, 1, 1, 1, 100)], STANDARD))
    only_false = np.zeros(100)
    only_false[[20, 70]] = [0.8, 0.4]
    assert best_threshold([(_series(), only_false)], STANDARD) == (math.inf, 0.0)


# -- detectors ---------------------------------------------------------------------------
def _day_series(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    times = np.arange(n, dtype=np.int64) * (HOUR_US // 12)  # every 5 minutes
    values = 10 + 3 * np.sin(2 * np.pi * np.arange(n) / 288) + rng.normal(0, 0.3, n)
    return times, values


def _run(detector: KeyDetector, times: np.ndarray, values: np.ndarray) -> list[tuple]:
    """Point by point."""
    return [detector(int(t), float(v)) for t, v in zip(times, values, strict=True)]


def _blocks(detector: KeyDetector, times: np.ndarray, values: np.ndarray, size: int = 100):
    """In blocks of ``size`` points, as a pipeline hands them over."""
    out: list[tuple] = []
    for lo in range(0, len(values), size):
        scores, alarms = detector.block(times[lo : lo + size], values[lo : lo + size])
        out += list(zip(scores.tolist(), alarms.tolist(), strict=True))
    return out


def test_a_spike_and_a_level_shift_raise_alarms_and_little_else():
    times, values = _day_series(4000)
    values[2500] += 25.0  # a spike
    values[3300:] += 12.0  # a level shift
    out = _blocks(KeyDetector(), times, values)
    alarms = [i for i, (_, alarm) in enumerate(out) if alarm]
    assert any(2500 <= a <= 2502 for a in alarms)
    assert any(3300 <= a <= 3305 for a in alarms)
    assert len([a for a in alarms if a > 600]) <= 4  # after warm-up, next to nothing else
    scores = np.array([s for s, _ in out])
    assert 0.0 <= scores.min() and scores.max() <= 1.0
    assert scores[2500] > np.quantile(scores[600:2400], 0.999)


def test_the_threshold_never_looks_ahead():
    times, values = _day_series(1500, seed=1)
    first = _blocks(KeyDetector(), times, values)
    shuffled = values.copy()
    rng = np.random.default_rng(2)
    shuffled[1050:] = rng.permutation(shuffled[1050:]) * 5  # the future, changed
    again = _blocks(KeyDetector(), times, shuffled)  # (blocks of 100: 1050 is inside one)
    assert again[:1050] == first[:1050] and again[1050:] != first[1050:]


def test_a_detector_pickled_mid_stream_goes_on_as_before():
    times, values = _day_series(900, seed=3)
    whole = _blocks(KeyDetector(), times, values)
    detector = KeyDetector()
    head = _blocks(detector, times[:500], values[:500])
    resumed = pickle.loads(pickle.dumps(detector))
    assert head + _blocks(resumed, times[500:], values[500:]) == whole


def test_surprise_follows_each_detectors_own_tail():
    rng = np.random.default_rng(4)
    gaussian, exponential = Surprise(), Surprise()
    ordinary = gaussian.block(rng.normal(0, 1, 1000))
    assert (ordinary[:50] == 0).all() and np.median(ordinary[100:]) < 1.0
    exponential.block(rng.exponential(1.0, 1000))
    # past the 0.95 quantile an exponential's tail is e^-x: 12 is one in e^12 (10^-5.2)
    rare = exponential.block(np.array([np.nan, 12.0]))
    assert rare[0] == 0.0 and rare[1] == pytest.approx(12 / math.log(10), abs=0.6)
    assert gaussian.block(np.array([12.0]))[0] > 10  # a lighter tail: far rarer there


def test_robust_z_of_changes_sees_a_jump_once():
    z = RobustZ(width=100, changes=True)
    out = np.concatenate([z.block(np.array([1.0, 1.1] * 60)), z.block(np.array([9.0, 9.1] * 10))])
    assert np.isnan(out[:31]).all()  # no change before the second value, 30 needed
    assert out[120] > 20 and (out[121:] < 2).all()


def test_points_in_blocks_score_as_one_by_one():
    times, values = _day_series(1200, seed=5)
    values[1000] += 20
    one_by_one = _run(KeyDetector(), times, values)
    detector, blocks = KeyDetector(), []
    for lo, hi in ((0, 1), (1, 300), (300, 301), (301, 900), (900, 1200)):
        scores, alarms = detector.block(times[lo:hi], values[lo:hi])
        blocks += list(zip(scores.tolist(), alarms.tolist(), strict=True))
    # (the forecaster's block and step passes round differently, within float32's
    # precision; its learning steps fall at the same points whatever the blocks)
    assert np.allclose([s for s, _ in blocks], [s for s, _ in one_by_one], atol=1e-5)
    assert [a for _, a in blocks] == [a for _, a in one_by_one]


def test_missing_values_and_empty_blocks_change_nothing():
    times, values = _day_series(800, seed=6)
    clean = _blocks(KeyDetector(), times, values)
    gappy = values.copy()
    gappy[[100, 400, 401]] = [np.nan, np.inf, -np.inf]
    detector, out = KeyDetector(), []
    for lo in range(0, 800, 100):
        detector.block(times[:0], values[:0])  # an empty block: nothing happens
        scores, alarms = detector.block(times[lo : lo + 100], gappy[lo : lo + 100])
        out += list(zip(scores.tolist(), alarms.tolist(), strict=True))
    assert [out[i] for i in (100, 400, 401)] == [(0.0, False)] * 3
    keep = [i for i in range(800) if i not in (100, 400, 401)]
    again = _blocks(KeyDetector(), times[keep], values[keep])
    assert [out[i][1] for i in keep] == [a for _, a in again]
    assert np.allclose([out[i][0] for i in keep], [s for s, _ in again], atol=1e-5)
    assert len(clean) == 800


class _Raw:
    """A detector whose raw scores are given: noise, and the spikes asked for."""

    def __init__(self, spikes: dict[int, float], seed: int) -> None:
        self.raw = np.abs(np.random.default_rng(seed).normal(0, 1, 2000))
        for at, size in spikes.items():
            self.raw[at] = size
        self.seen = 0

    def block(self, values: np.ndarray) -> np.ndarray:
        self.seen += len(values)
        return self.raw[self.seen - len(values) : self.seen]


def test_after_an_alarm_only_a_larger_one_counts_for_a_while():
    spikes_a, spikes_b = {1000: 40.0}, {1050: 20.0, 1400: 20.0}  # b: in and past the quiet
    detector = KeyDetector(detectors={"a": _Raw(spikes_a, 7), "b": _Raw(spikes_b, 8)})
    times = np.arange(2000, dtype=np.int64) * HOUR_US
    _, alarms = detector.block(times, np.zeros(2000))
    assert alarms[1000] and not alarms[1050] and alarms[1400]
    alone = KeyDetector(detectors={"b": _Raw(spikes_b, 8)})
    assert alone.block(times, np.zeros(2000))[1][1050]  # b's spike, alone, is an alarm


def test_quiet_and_memory_must_be_positive():
    for name in ("quiet", "memory", "columns"):
        with pytest.raises(ValueError, match=f"{name} must be >= 1"):
            KeyDetector(**{name: 0})


def test_ties_at_the_top_bound_the_tail_by_the_spread():
    surprise = Surprise()
    history = np.array([0.0] * 900 + [2.0] * 100)
    surprise.block(np.random.default_rng(11).permutation(history))
    just_above, far_above = surprise.block(np.array([2.0001, 20.0]))
    assert 2.5 < just_above < 3.5  # above all 1,000 seen: about one in 1,000, not 10^-300
    assert far_above > just_above + 5


def test_several_columns_share_one_forecaster_and_alarm_on_any():
    times, base = _day_series(1500, seed=9)
    rng = np.random.default_rng(10)
    values = np.stack([base, base * 2 + rng.normal(0, 0.3, 1500), rng.normal(5, 1, 1500)], 1)
    values[1200, 2] += 15  # an anomaly in the third column only
    detector = KeyDetector(columns=3)
    forecasters = [d for d in detector.detectors.values() if isinstance(d, Forecast)]
    assert len(forecasters) == 1 and forecasters[0].columns == 3
    head = _blocks(detector, times[:700], values[:700])
    resumed = pickle.loads(pickle.dumps(detector))
    out = head + _blocks(resumed, times[700:], values[700:])
    assert out == _blocks(KeyDetector(columns=3), times, values)  # pickled mid-stream: same
    other = _blocks(KeyDetector(columns=3), times, values, size=37)  # other blocks
    assert [a for _, a in other] == [a for _, a in out]  # (float32 prefill rounds apart)
    assert np.allclose([s for s, _ in other], [s for s, _ in out], atol=1e-5)
    alarms = [i for i, (_, alarm) in enumerate(out) if alarm]
    assert 1200 in alarms and len([a for a in alarms if a > 600]) <= 4
    gappy = values.copy()
    gappy[300, 1] = np.nan  # one missing value: the point is missing
    assert _blocks(KeyDetector(columns=3), times, gappy)[300] == (0.0, False)
    with pytest.raises(ValueError, match="2 value columns"):
        KeyDetector(columns=3).block(times[:5], values[:5, :2])
