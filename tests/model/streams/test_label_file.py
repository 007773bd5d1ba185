"""A labels file read into label-only batches, and its labels merged into a stream at
the times they became known."""

from __future__ import annotations

import numpy as np
import pytest

from model import batch as mb
from model.streams.delayed import merge_labels
from model.streams.label_file import LabelFormat, parse_label_lines
from model.vocabulary import Stage

S = 1_000_000


def _parse(lines: list[str], **kwargs) -> tuple[list, list]:
    fmt = LabelFormat("y", **{"default_key": "k", **kwargs})
    chunks = list(parse_label_lines(lines, fmt, "labels.csv"))
    return [c.batch for c in chunks if c.batch is not None], [d for c in chunks for d in c.dead]


def test_good_rows_become_labels_with_the_time_they_were_known():
    lines = [
        "label_time,y,event_id,timestamp",
        "100,1,7,40",
        "90.5,0,8,90",
        "1970-01-01T00:03:00Z,2,9,1",
    ]
    (batch,), dead = _parse(lines)
    assert not dead and mb.is_label_batch(batch)
    assert batch.column(mb.EVENT_ID).to_pylist() == [7, 8, 9]
    assert mb.labels_numpy(batch).tolist() == [1, 0, 2]
    assert (mb.event_times_us(batch) // S).tolist() == [40, 90, 1]
    assert mb.label_times_us(batch).tolist() == [100 * S, 90_500_000, 180 * S]
    assert batch.column(mb.KEY).to_pylist() == ["k"] * 3


def test_every_bad_row_is_a_dead_letter_with_its_reason_and_line():
    lines = [
        "event_id,timestamp,y,label_time,key",
        "1,10,1,20,a",  # good
        "2,10,7,20,a",  # not a class
        "3,10,-1,20,a",  # negative
        "x,10,1,20,a",  # event id not a number
        "4,10,1,5,a",  # known before its event
        "5,ten,1,20,a",  # bad time
        "6,10,1,20,",  # empty key
        "7,10,1,20",  # a field short
        "8,10,0.0,20,b",  # good: 0.0 is class 0
    ]
    (batch,), dead = _parse(lines, num_classes=3)
    assert batch.column(mb.EVENT_ID).to_pylist() == [1, 8]
    assert batch.column(mb.KEY).to_pylist() == ["a", "b"]
    reasons = {d.payload["line"]: d.reason for d in dead}
    assert all(d.stage == Stage.LABELS and d.rows == 1 for d in dead)
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9]
    assert reasons[3] == "label '7' in column 'y' is not a class in [0, 3)"
    assert reasons[4] == "label '-1' in column 'y' is not a class in [0, 3)"
    assert "non-integer value 'x'" in reasons[5]
    assert reasons[6] == "label known before its event (label_time 5 < 10)"
    assert "unparseable timestamp 'ten'" in reasons[7]
    assert reasons[8] == "empty key"
    assert reasons[9] == "wrong number of columns: expected 5, got 4"
    assert dead[0].payload == {"source": "labels.csv", "line": 3, "raw": "2,10,7,20,a"}


def test_a_header_without_the_columns_needed_is_refused():
    with pytest.raises(ValueError, match=r"\['label_time'\] not in"):
        _parse(["event_id,timestamp,y", "1,2,1"])
    with pytest.raises(ValueError, match="events have several keys"):
        _parse(["event_id,timestamp,y,label_time", "1,2,1,3"], default_key=None)
    with pytest.raises(ValueError, match="empty labels file"):
        _parse([])


def _events(n: int = 400, per_chunk: int = 50, lag_s: int = 3, seed: int = 0):
    """Events a second apart, out of order, in chunks with a lagging watermark, and
    labels for most of them, each known 0-60 s after its event."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, n, n)) * S + rng.integers(-2, 3, n) * S
    events = mb.make_batch(["k"] * n, t, rng.standard_normal((n, 2)), event_ids=range(n))
    chunks, watermark = [], -(10**18)
    for a in range(0, n, per_chunk):
        piece = events.slice(a, per_chunk)
        watermark = max(watermark, int(mb.event_times_us(piece).max()) - lag_s * S)
        chunks.append((piece, watermark, []))
    labelled = np.flatnonzero(rng.random(n) < 0.9)
    known = t[labelled] + rng.integers(0, 60, len(labelled)) * S
    lines = ["event_id,timestamp,y,label_time"]
    lines += [
        f"{i},{t[i] / S:.0f},{i % 2},{k / S:.0f}" for i, k in zip(labelled, known, strict=True)
    ]
    return events, chunks, lines


@pytest.mark.parametrize("span_s", [1, 10, 1000])
def test_merged_labels_arrive_once_after_they_were_known_and_soon_after(span_s):
    events, chunks, lines = _events()
    labels, dead = _parse(lines, chunk_rows=64)
    assert not dead
    seen: set[int] = set()
    got: dict[int, int] = {}
    last = None
    for piece, watermark, _ in merge_labels(chunks, labels, span_s * S):
        assert last is None or watermark >= last
        last = watermark
        ids = piece.column(mb.EVENT_ID).to_pylist()
        if not mb.is_label_batch(piece):
            seen.update(ids)
            continue
        known = mb.label_times_us(piece)
        final = watermark == chunks[-1][1]
        assert (known <= watermark).all() or final  # never before it was known
        # nor long after: by the end of the next piece of the stream (two spans, the
        # source's lag of 3 s and 2 s of events out of order)
        assert (watermark <= known + 2 * span_s * S + 5 * S).all() or final
        for i, y in zip(ids, mb.labels_numpy(piece).tolist(), strict=True):
            assert i not in got
            got[i] = y
    assert seen == set(range(events.num_rows))  # every event, as it was
    expected = {int(line.split(",")[0]): int(line.split(",")[2]) for line in lines[1:]}
    assert got == expected
