"""The lagged label is the key's previous label, and never the row's own or a later one."""

from __future__ import annotations

import numpy as np
import pytest

from model import batch as mb
from model.streams.lag import UNKNOWN, LaggedLabels


def _stream(seed: int, rows: int = 600) -> list:
    """Batches of a stream with 5 keys, ties in time, out-of-order arrival across
    batches; every row's label is unique (its row number), so a lag names its row."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, rows // 2, size=rows))  # many ties
    arrival = np.argsort(times + rng.integers(-8, 9, size=rows), kind="stable")
    keys = rng.choice(list("abcde"), size=rows)
    batches, at = [], 0
    while at < rows:
        size = int(rng.integers(1, 40))
        idx = arrival[at : at + size]
        batches.append(mb.make_batch(keys[idx], times[idx], np.zeros((len(idx), 1)), labels=idx))
        at += size
    return batches


@pytest.mark.parametrize("seed", range(5))
def test_a_lag_names_an_earlier_event_of_the_key_known_by_then(seed):
    batches = _stream(seed)
    lag = LaggedLabels(num_classes=10_000)
    arrived: dict[int, int] = {}  # row -> the batch it came in
    time_of: dict[int, int] = {}
    key_of: dict[int, str] = {}
    newest: dict[str, int] = {}  # key -> its newest row of earlier batches
    known = 0
    for b, batch in enumerate(batches):
        rows = mb.labels_numpy(batch).tolist()
        times = mb.event_times_us(batch).tolist()
        keys = batch.column(mb.KEY).to_pylist()
        for r, t, k in zip(rows, times, keys, strict=True):
            arrived[r], time_of[r], key_of[r] = b, t, k
        lags = lag.lags(batch)
        for r, t, k, source in zip(rows, times, keys, lags.tolist(), strict=True):
            # the candidates: the key's newest row of earlier batches, and the key's
            # rows of this batch, strictly earlier in time than the row
            candidates = [s for s in rows if key_of[s] == k and time_of[s] < t]
            if k in newest and time_of[newest[k]] < t:
                candidates.append(newest[k])
            if source == UNKNOWN:
                assert not candidates
                continue
            known += 1
            # never the row itself, a later row, or one that had not arrived yet
            assert source != r and key_of[source] == k
            assert time_of[source] < t and arrived[source] <= b
            # and the newest of what was known
            assert time_of[source] == max(time_of[s] for s in candidates)
        for r, t, k in zip(rows, times, keys, strict=True):
            if k not in newest or t > time_of[newest[k]]:
                newest[k] = r
    assert known > 400  # most rows have a lag


def test_apply_appends_a_one_hot_and_keeps_the_schema_metadata():
    batch = mb.with_watermark(mb.make_batch(["a", "a"], [1, 2], np.ones((2, 3)), labels=[2, 0]), 5)
    out = LaggedLabels(num_classes=3).apply(batch)
    assert mb.num_features(out) == 6 and mb.watermark_of(out) == 5
    assert mb.features_numpy(out).tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 1]]


def test_state_survives_a_snapshot():
    one, two = LaggedLabels(2), LaggedLabels(2)
    one.lags(mb.make_batch(["a"], [1], np.zeros((1, 1)), labels=[1]))
    two.restore(one.snapshot())
    assert two.lags(mb.make_batch(["a"], [2], np.zeros((1, 1)), labels=[0])).tolist() == [1]
