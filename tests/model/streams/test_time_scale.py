"""The window a stream gets when the user gives none fits its own time scale."""

from __future__ import annotations

import numpy as np
import pytest

from model.streams.time_scale import EVENTS_PER_WINDOW, fit_window, round_duration

SECOND = 1_000_000


@pytest.mark.parametrize("spacing_s", [0.01, 1.0, 300.0, 1_800.0, 3_600.0, 86_400.0])
def test_dense_and_sparse_streams_get_windows_of_about_the_same_number_of_events(spacing_s):
    times = (np.arange(500) * spacing_s * SECOND).astype(np.int64)
    scale = fit_window(times)
    assert scale.spacing_s == pytest.approx(spacing_s)
    assert EVENTS_PER_WINDOW / 2 <= scale.events_per_window <= EVENTS_PER_WINDOW * 2
    assert scale.window_s == round_duration(scale.window_s)  # a round duration


def test_events_sharing_a_timestamp_count_towards_the_window():
    # eight keys, each with an event every minute: eight events per distinct time
    times = np.repeat(np.arange(200) * 60 * SECOND, 8)
    scale = fit_window(times)
    assert scale.spacing_s == 60.0
    assert scale.window_s == 5 * 60  # 5 min: 40 events, the round duration nearest 32
    assert scale.events_per_window == 40


def test_irregular_and_unordered_times_use_the_median_gap():
    rng = np.random.default_rng(0)
    times = np.cumsum(rng.exponential(3_600.0, size=400) * SECOND).astype(np.int64)
    scale = fit_window(rng.permutation(times))
    assert 1_800 < scale.spacing_s < 3_600  # an exponential gap's median: ln 2 of its mean


def test_too_few_timestamps_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than two distinct timestamps"):
        fit_window(np.array([5, 5, 5]))
