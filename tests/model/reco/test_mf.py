"""Streaming biased MF: prequential order, state round trip, top-k, ids, cold start."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model.reco.ids import IdTable
from model.reco.mf import MFConfig, StreamingMF
from model.streams.interactions import InteractionsConfig, interactions


@pytest.fixture(scope="module")
def stream() -> dict[str, np.ndarray]:
    return interactions(InteractionsConfig(events=3000, users=200, items=100, seed=3))


def _run(mf: StreamingMF, s: dict[str, np.ndarray], a: int, b: int, step: int = 256):
    return np.concatenate(
        [
            mf.predict_learn(
                s["user"][i : min(i + step, b)],
                s["item"][i : min(i + step, b)],
                s["rating"][i : min(i + step, b)],
            )  # fmt: skip
            for i in range(a, b, step)
        ]
    )


def test_a_prediction_comes_before_its_own_rating(stream) -> None:
    whole = _run(StreamingMF(MFConfig(seed=0)), stream, 0, 3000)
    for e in (0, 1, 257, 1999):
        before = StreamingMF(MFConfig(seed=0))
        if e:
            _run(before, stream, 0, e)
        changed = stream["rating"][e] % 5 + 1  # another rating for the same event
        got = before.predict_learn(stream["user"][e : e + 1], stream["item"][e : e + 1], [changed])
        assert got[0] == pytest.approx(whole[e], abs=1e-6)


def test_snapshot_restore_continues_exactly(stream) -> None:
    a = StreamingMF(MFConfig(seed=1))
    _run(a, stream, 0, 1500)
    b = StreamingMF(MFConfig(seed=1))
    b.restore(pickle.loads(pickle.dumps(a.snapshot())))
    np.testing.assert_array_equal(_run(a, stream, 1500, 3000), _run(b, stream, 1500, 3000))
    assert a.top_k("u3", 5) == b.top_k("u3", 5)


def test_top_k_excludes_what_the_user_rated(stream) -> None:
    mf = StreamingMF(MFConfig(seed=0))
    _run(mf, stream, 0, 3000)
    user = stream["user"][0]
    rated = set(stream["item"][stream["user"] == user].tolist())
    top = mf.top_k(user, 10)
    assert len(top) == 10 and not rated & {item for item, _ in top}
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True)
    everything = mf.top_k(user, 10, exclude_seen=False)
    assert everything[0][1] >= top[0][1]


def test_the_kernel_and_numpy_agree(stream) -> None:
    c = _run(StreamingMF(MFConfig(seed=2)), stream, 0, 1000)
    n = _run(StreamingMF(MFConfig(seed=2), kernel=False), stream, 0, 1000)
    np.testing.assert_allclose(c, n, atol=1e-3)


def test_cold_start_predicts_mean_plus_item_bias(stream) -> None:
    mf = StreamingMF(MFConfig(seed=0))
    _run(mf, stream, 0, 2000)
    item = stream["item"][0]
    (row,) = mf.items.ids.rows([item], add=False)
    expected = mf.mean[1] + mf.items.bias[row]
    assert mf.predict(["nobody"], [item])[0] == pytest.approx(expected, abs=1e-5)
    got = mf.predict_learn(["nobody"], [item], [np.nan])  # predicted, nothing learned
    assert got[0] == pytest.approx(expected, abs=1e-5)


def test_learning_beats_the_mean_on_a_drifting_stream() -> None:
    s = interactions(InteractionsConfig(events=20_000, users=300, items=200, seed=5))
    pred = _run(StreamingMF(MFConfig(seed=0)), s, 0, 20_000, step=1000)
    late = slice(10_000, 20_000)
    rmse = np.sqrt(np.mean((pred[late] - s["rating"][late]) ** 2))
    baseline = np.sqrt(np.mean((s["rating"][:10_000].mean() - s["rating"][late]) ** 2))
    assert rmse < 0.9 * baseline


def test_hashed_ids_count_collisions_and_growing_ids_never_collide() -> None:
    ids = [f"user-{i}" for i in range(1000)]
    hashed, growing = IdTable(buckets=256), IdTable()
    rows = hashed.rows(ids)
    assert rows.max() < 256 and hashed.distinct == 1000
    assert hashed.collisions == 1000 - hashed.size
    assert growing.rows(ids).tolist() == list(range(1000)) and growing.collisions == 0
    assert hashed.rows(ids).tolist() == rows.tolist()  # stable
    restored = IdTable(buckets=256)
    restored.restore(hashed.snapshot())
    assert restored.rows(ids).tolist() == rows.tolist() and restored.collisions == hashed.collisions


def test_bad_config_is_named() -> None:
    with pytest.raises(ValueError, match="factors"):
        MFConfig(factors=0)
    with pytest.raises(ValueError, match="rating_range"):
        MFConfig(rating_range=(5.0, 1.0))
    with pytest.raises(ValueError, match="buckets"):
        IdTable(buckets=0)


def test_negative_sampling_ranks_what_users_interact_with(stream) -> None:
    ones = np.ones(3000)
    rates = {}
    for k in (0, 4):
        mf = StreamingMF(MFConfig(seed=0, negatives=k))
        hits = asked = 0
        for s in range(0, 3000, 30):
            user, item = stream["user"][s], stream["item"][s]
            if mf.users.ids.rows([user], add=False)[0] >= 0:
                asked += 1
                hits += item in {name for name, _ in mf.top_k(user, 10)}
            out = mf.predict_learn(stream["user"][s : s + 30], stream["item"][s : s + 30],
                                   ones[s : s + 30])  # fmt: skip
            assert len(out) == 30  # one prediction an interaction, none for the samples
        rates[k] = hits / asked
        # only what users did is "seen": sampled negatives stay recommendable
        pairs = set(zip(stream["user"], stream["item"], strict=True))
        assert len(mf.seen) == len(pairs)
    assert rates[4] > 3 * rates[0]


@pytest.mark.parametrize("buckets", [None, 8])
def test_a_few_ids_get_the_rows_a_batch_gives_them(buckets):
    few, batch = IdTable(buckets=buckets), IdTable(buckets=buckets)
    ids = ["b", "a", "b", "c", "a"]
    assert few.rows(ids).tolist() == batch.rows(np.array(ids, dtype=object)).tolist()
    assert few.rows(["z", "a"], add=False).tolist() == [-1, few.rows(["a"])[0]]
    assert (few.distinct, few.collisions) == (batch.distinct, batch.collisions)
    assert few.rows([7]).tolist() == batch.rows(np.array([7])).tolist()  # cast as a batch is
