"""A labelled stream replayed with each label a fixed delay after its event."""

from __future__ import annotations

import numpy as np
import pytest

from model import batch as mb
from model.streams.delayed import delay_labels

S = 1_000_000


def _chunks(n: int = 500, per_chunk: int = 64, lag_s: int = 3, seed: int = 0):
    """Out-of-order events, a second apart on average, in chunks with a lagging
    watermark (as the CSV replay makes them)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, n, n)) * S + rng.integers(-2, 3, n) * S
    batch = mb.make_batch(
        ["k"] * n, t, rng.standard_normal((n, 2)), labels=rng.integers(0, 2, n), event_ids=range(n)
    )
    out, watermark = [], -(10**18)
    for a in range(0, n, per_chunk):
        piece = batch.slice(a, per_chunk)
        watermark = max(watermark, int(mb.event_times_us(piece).max()) - lag_s * S)
        out.append((piece, watermark, []))
    return batch, out


@pytest.mark.parametrize(("delay_s", "span_s"), [(0, 5), (7, 5), (30, 10), (200, 1000)])
def test_every_label_comes_after_its_event_once_due_and_not_much_later(delay_s, span_s):
    batch, chunks = _chunks()
    seen_events: set[int] = set()
    labels: dict[int, int] = {}
    last_watermark = None
    for piece, watermark, _ in delay_labels(chunks, delay_s * S, span_s * S):
        assert last_watermark is None or watermark >= last_watermark  # never goes back
        last_watermark = watermark
        ids = piece.column(mb.EVENT_ID).to_pylist()
        if not mb.is_label_batch(piece):
            assert mb.labels_numpy(piece) is None  # a scorer never sees them
            seen_events.update(ids)
            continue
        times = mb.event_times_us(piece)
        assert set(ids) <= seen_events  # after its event
        due = times + delay_s * S
        final = watermark == chunks[-1][1]
        assert (due <= watermark).all() or final  # only once known
        assert (watermark <= due + span_s * S + 3 * S).all() or final  # handed on in time
        labels.update(zip(ids, piece.column(mb.LABEL).to_pylist(), strict=True))
    # every event and every label, once, with the label it had
    assert seen_events == set(range(batch.num_rows))
    expected = dict(zip(range(batch.num_rows), mb.labels_numpy(batch).tolist(), strict=True))
    assert labels == expected


def test_delay_validation():
    with pytest.raises(ValueError, match="label delay >= 0"):
        list(delay_labels([], -1, 1))
