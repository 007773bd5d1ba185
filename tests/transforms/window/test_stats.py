"""Per-key partial statistics of scored micro-batches."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from model import batch as mb
from model.batch import scored_batch
from model.stats import StatsTable, partial_stats, stats_of


def scored(keys, versions, labels, preds):
    n = len(keys)
    batch = mb.make_batch(keys, np.arange(n) * 1000, np.zeros((n, 2)), labels=np.array(labels))
    out = scored_batch(batch, np.array(preds), np.full(n, 0.5, np.float32), 0)
    index = out.schema.get_field_index("model_version")
    return out.set_column(index, "model_version", pa.array(versions, type=pa.int64()))


def test_counts_accuracy_and_version_range_per_key():
    first = partial_stats(
        scored(["a", "b", "a", "c", "a"], [3, 5, 1, 4, 2], [1, 0, 1, 1, 0], [1, 1, 0, 1, 0])
    )
    stats = first.as_stats()
    assert sorted(stats) == ["a", "b", "c"]
    events, score, labelled, correct, low, high = stats["a"]
    assert (events, labelled, correct, low, high) == (3, 3, 2, 1, 3)
    assert score == 1.5
    assert tuple(stats["b"][[0, 3, 4, 5]]) == (1, 0, 5, 5)
    assert tuple(stats["c"][[0, 3, 4, 5]]) == (1, 1, 4, 4)
    # One version for the whole batch, and merging keeps the range.
    second = partial_stats(scored(["a", "c"], [7, 7], [0, 0], [0, 1]))
    same = second.as_stats()
    assert tuple(same["a"][4:]) == (7, 7) and tuple(same["c"][4:]) == (7, 7)
    merged = StatsTable().add(first).add(second).stats()
    assert tuple(merged["a"][[0, 4, 5]]) == (4, 1, 7) and tuple(merged["c"][[0, 3]]) == (2, 1)


@pytest.mark.parametrize("keys", [["a"] * 6, ["a", "b", "a", "c", "b", "a"]])
@pytest.mark.parametrize("versions", [3, np.array([3, 3, 4, 5, 3, 4])])
def test_stats_from_arrays_equal_the_stats_of_the_scored_batch(keys, versions):
    rng = np.random.default_rng(0)
    batch = mb.make_batch(keys, np.arange(6), rng.random((6, 2)), labels=[0, 1, 1, 0, 1, 0])
    pred, score = np.array([0, 1, 0, 0, 1, 1]), rng.random(6).astype(np.float32)
    expected = partial_stats(scored_batch(batch, pred, score, versions)).as_stats()
    codes, names = mb.key_codes(batch)
    correct = pred == mb.labels_numpy(batch)
    got = stats_of(codes, names, score=score, correct=correct, versions=versions).as_stats()
    assert got.keys() == expected.keys()
    for key in got:
        assert got[key].tolist() == expected[key].tolist()  # bit for bit


def test_a_partial_is_its_own_copy():
    """Beam's streaming runner deep-copies the grouping state for every bundle; a
    partial never changes once made, so copying it costs nothing."""
    import copy

    part = partial_stats(scored(["a", "b"], [1, 2], [0, 1], [0, 1]))
    assert copy.deepcopy(part) is part
    assert copy.deepcopy([part, part])[0] is part
