"""DetectDrift finds a change in each key's prequential error, in Beam state, with
the alarms the plain detectors give on the same rows, in both modes."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from model import batch as mb
from model.drift import KeyedDrift
from tests.collect import Collect, take
from tests.conftest import make_pipeline
from transforms.io import replay
from transforms.online import DetectDrift
from transforms.window.spec import WindowSpec

S = 1_000_000


def _scored_batches(rows: int = 6000, change: int = 3000) -> list:
    """Scored rows of keys a and b, one second apart; key a's error rate jumps at
    ``change``, key b's stays low."""
    rng = np.random.default_rng(5)
    out = []
    for at in range(0, rows, 250):
        n = 250
        t = (np.arange(at, at + n)) * S
        keys = np.where(np.arange(n) % 2 == 0, "a", "b")
        labels = rng.integers(0, 2, n)
        rate = np.where((keys == "a") & (np.arange(at, at + n) >= change), 0.45, 0.05)
        wrong = rng.random(n) < rate
        batch = mb.make_batch(keys, t, np.zeros((n, 1)), labels=labels, event_ids=t // S)
        pred = np.where(wrong, 1 - labels, labels)
        out.append(mb.scored_batch(batch, pred, np.ones(n, np.float32), 1))
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["bounded", "streaming"])
def test_alarms_are_the_plain_detectors_and_only_for_the_key_that_drifted(streaming):
    batches = _scored_batches()
    plain = KeyedDrift("page-hinkley")
    want = []
    for b in batches:
        codes, keys = mb.key_codes(b)
        errors = (b.column(mb.PREDICTION).to_numpy() != mb.labels_numpy(b)).astype(float)
        for key, row, kind, _ in plain.update(keys, codes, mb.event_times_us(b), errors):
            if kind:
                want.append((key, int(mb.event_times_us(b)[row])))
    p = make_pipeline(streaming=streaming)
    if streaming:
        source = replay(p, [(b, int(mb.event_times_us(b).max()), []) for b in batches]).batches
    else:
        source = p | beam.Create(batches)
    _ = source | DetectDrift(WindowSpec("fixed", size_s=100.0)) | beam.ParDo(Collect("drift"))
    p.run().wait_until_finish()
    records = take("drift")
    got = sorted((r["key"], r["event_time_us"]) for r in records)
    assert got == sorted(want) and got
    assert {k for k, _ in got} == {"a"} and min(t for _, t in got) >= 3000 * S
    for r in records:  # each names the window of the row that completed it
        assert r["window_end_us"] - r["window_start_us"] == 100 * S
        assert r["window_start_us"] <= r["event_time_us"] < r["window_end_us"]
        assert r["detector"] == "page-hinkley" and r["statistic"] > 50
