"""LagLabels in a pipeline gives each event its key's previous label, as the plain
object does on the same batches in arrival order, in both modes."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from model import batch as mb
from model.streams.lag import LaggedLabels
from tests.collect import Collect, take
from tests.conftest import make_pipeline
from transforms.io import replay
from transforms.online import LagLabels


def _batches() -> list:
    rng = np.random.default_rng(3)
    out, t = [], 0
    for _ in range(12):
        n = int(rng.integers(1, 9))
        times = t + np.sort(rng.integers(0, 5, size=n)) * 1_000_000
        t = int(times.max()) + 1_000_000
        keys = rng.choice(["a", "b"], size=n)
        out.append(
            mb.make_batch(
                keys,
                times,
                rng.normal(size=(n, 2)),
                labels=rng.integers(0, 3, n),
                event_ids=np.arange(len(out) * 10, len(out) * 10 + n),
            )
        )
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["bounded", "streaming"])
def test_lag_labels_in_a_pipeline_match_the_plain_object(streaming):
    batches = _batches()
    reference = LaggedLabels(3)
    expected = {}
    for b in batches:
        out = reference.apply(b)
        ids = out.column(mb.EVENT_ID).to_pylist()
        expected.update(zip(ids, mb.features_numpy(out).tolist(), strict=True))
    p = make_pipeline(streaming=streaming)
    if streaming:
        items = [(b, int(mb.event_times_us(b).max()), []) for b in batches]
        source = replay(p, items).batches
    else:
        source = p | beam.Create(batches)
    _ = source | LagLabels(3) | beam.ParDo(Collect("lag"))
    p.run().wait_until_finish()
    got = {}
    for out in take("lag"):
        ids = out.column(mb.EVENT_ID).to_pylist()
        got.update(zip(ids, mb.features_numpy(out).tolist(), strict=True))
    assert got == expected
