"""FeatureDrift sketches each window across bundles and compares it with the one
before: the window where a feature moves is flagged, the others are not."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pytest

from model import batch as mb
from tests.collect import Collect, take
from tests.conftest import make_pipeline
from transforms.io import replay
from transforms.io.sources import stamped
from transforms.window.feature_drift import FeatureDrift
from transforms.window.spec import WindowSpec

S = 1_000_000


def _batches() -> list:
    """Six 100 s windows of 400 events in batches of 50; feature 1 moves in window 3."""
    rng = np.random.default_rng(2)
    out = []
    for w in range(6):
        for part in range(8):
            t = w * 100 * S + np.sort(rng.integers(0, 100 * S, 50))
            x = rng.normal(0, 1, (50, 2))
            if w >= 3:
                x[:, 1] += 1.5
            out.append(
                mb.make_batch(["k"] * 50, t, x, event_ids=np.arange(50) + 50 * (8 * w + part))
            )
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["bounded", "streaming"])
def test_the_window_where_a_feature_moves_is_flagged(streaming):
    batches = _batches()
    p = make_pipeline(streaming=streaming)
    if streaming:
        source = replay(p, [(b, int(mb.event_times_us(b).max()), []) for b in batches]).batches
    else:
        source = p | beam.Create(batches) | beam.Map(stamped)  # as the sources stamp
    windowed = source | beam.WindowInto(beam.window.FixedWindows(100))
    _ = windowed | FeatureDrift(WindowSpec("fixed", size_s=100.0)) | beam.ParDo(Collect("fd"))
    p.run().wait_until_finish()
    records = sorted(take("fd"), key=lambda r: r["window_start_us"])
    assert [r["window_start_us"] // (100 * S) for r in records] == [1, 2, 3, 4, 5]
    assert all(r["rows"] == 400 for r in records)  # every bundle's rows in its window
    flagged = {r["window_start_us"] // (100 * S): r["drifted_features"] for r in records}
    assert flagged == {1: [], 2: [], 3: [1], 4: [], 5: []}
