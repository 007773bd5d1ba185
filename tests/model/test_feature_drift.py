"""Quantile sketches of features: merged sketches equal one sketch of all values, and
the KS comparison flags a moved feature and not a still one."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model.feature_drift import FeatureSketch, critical_distance, drifted, ks_distances


def test_sketches_merged_across_bundles_equal_one_sketch_of_all_values():
    rng = np.random.default_rng(1)
    values = np.column_stack([rng.normal(size=3000), rng.exponential(size=3000)])
    whole = FeatureSketch(2)
    whole.add(values)
    parts = [FeatureSketch(2) for _ in range(5)]
    for i, part in enumerate(parts):  # five workers, each some of the rows
        part.add(values[i::5])
    merged = pickle.loads(pickle.dumps(parts[0]))  # it travels between workers
    for part in parts[1:]:
        merged.merge(pickle.loads(pickle.dumps(part)))
    a, b = whole.summary(), merged.summary()
    assert a.rows == b.rows == 3000
    np.testing.assert_allclose(a.quantiles, b.quantiles)
    # and the sketch's quantiles are the data's, within its error bound
    exact = np.quantile(values, np.linspace(0, 1, a.quantiles.shape[1]), axis=0).T
    rank_error = [
        np.abs(np.searchsorted(np.sort(values[:, f]), a.quantiles[f]) / 3000
               - np.linspace(0, 1, a.quantiles.shape[1])).max()
        for f in range(2)
    ]  # fmt: skip
    assert max(rank_error) <= 0.011 and exact.shape == a.quantiles.shape


@pytest.mark.parametrize("seed", range(5))
def test_a_moved_feature_drifts_and_a_still_one_does_not(seed):
    rng = np.random.default_rng(seed)
    before, after = FeatureSketch(3), FeatureSketch(3)
    before.add(rng.normal(0, 1, (400, 3)))
    moved = rng.normal(0, 1, (400, 3))
    moved[:, 1] += 1.0  # one standard deviation
    moved[:, 2] *= 3.0  # a wider spread, same mean
    after.add(moved)
    a, b = before.summary(), after.summary()
    assert drifted(a, b).tolist() == [False, True, True]
    assert ks_distances(a, b)[0] < critical_distance(400, 400, 0.001, 0.01)


def test_small_windows_need_a_larger_distance():
    assert critical_distance(20, 20, 0.001, 0.01) > 2 * critical_distance(400, 400, 0.001, 0.01)
    assert critical_distance(0, 10, 0.001, 0.01) == float("inf")
    with pytest.raises(ValueError, match="expected \\(rows, 2\\)"):
        FeatureSketch(2).add(np.zeros((3, 4)))
