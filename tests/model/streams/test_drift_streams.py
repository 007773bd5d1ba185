import numpy as np
import pytest

from model import batch as mb
from model.streams.drift_streams import STREAMS, agrawal, as_chunks, sea


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_streams_are_seeded_and_binary(name):
    x1, y1 = STREAMS[name](5000, seed=1)
    x2, y2 = STREAMS[name](5000, seed=1)
    x3, _ = STREAMS[name](5000, seed=2)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    assert x1.dtype == np.float32 and set(np.unique(y1)) == {0, 1}


def test_sea_concept_changes_every_quarter():
    x, y = sea(40_000, noise=0.0)
    rule = (x[:, 0] + x[:, 1] <= 8.0).astype(np.int64)  # the first concept
    agree = [
        (rule[q * 10_000 : (q + 1) * 10_000] == y[q * 10_000 : (q + 1) * 10_000]).mean()
        for q in range(4)
    ]
    assert agree[0] == 1.0 and min(agree[1:]) < 0.95


def test_agrawal_switches_functions():
    x, y = agrawal(30_000, noise=0.0)
    age = x[:, 2]
    f1 = ((age < 40) | (age >= 60)).astype(np.int64)
    assert (f1[:10_000] == y[:10_000]).all()
    assert (f1[10_000:] == y[10_000:]).mean() < 0.8


def test_chunks_are_valid_micro_batches():
    x, y = sea(1000)
    chunks = list(as_chunks(x, y, chunk=300))
    assert [c.num_rows for c in chunks] == [300, 300, 300, 100]
    for c in chunks:
        mb.validate_batch(c)
    times = np.concatenate([mb.event_times_us(c) for c in chunks])
    assert np.all(np.diff(times) >= 0) and times[-1] == 999_000
