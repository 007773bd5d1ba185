"""Framed windows: several windows to one Beam window, each window still exact."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from model import batch as mb
from model.batch import scored_batch
from tests.collect import rows_of
from tests.conftest import make_pipeline
from tests.transforms.window.test_windowing import random_stream
from transforms.window import EventTimeWindow, TriggerSpec, WindowSpec, cell_ids
from transforms.window.spec import FramedWindows, window_size_us
from transforms.window.stats import WindowStats

S = 1_000_000
FRAMED = WindowSpec("fixed", size_s=2.0, offset_s=1.0, frame=5)
PLAIN = WindowSpec("fixed", size_s=2.0, offset_s=1.0)


def test_a_frame_is_one_beam_window_of_whole_windows():
    fn = FRAMED.window_fn()
    assert (
        isinstance(fn, FramedWindows)
        and fn == WindowSpec("fixed", 2.0, offset_s=1.0, frame=5).window_fn()
    )
    assert fn != PLAIN.window_fn() and fn != WindowSpec("fixed", 2.0, frame=5).window_fn()
    assert (fn.size.micros, window_size_us(fn), window_size_us(PLAIN.window_fn())) == (
        10 * S,
        2 * S,
        2 * S,
    )
    times = np.arange(-30, 30) * S // 2
    # rows share a cell exactly when they share a frame [1 + 10j, 11 + 10j) s
    assert (cell_ids(FRAMED, times) == (times - S) // (10 * S)).all()
    assert (
        FRAMED.fixed_window_ends_us(times) == 1 * S + ((times - S) // (2 * S) + 1) * 2 * S
    ).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "sliding", "size_s": 4, "period_s": 2, "frame": 2}, "only fixed windows"),
        ({"kind": "fixed", "frame": 0}, "frame must be a whole number"),
    ],
)
def test_frame_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowSpec(**kwargs)


def _per_window(element: Any, window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
    yield ((window.start.micros, window.end.micros), element.num_rows)


def test_every_piece_lies_in_one_frame_and_no_event_is_lost():
    batches = random_stream(3)
    expected: dict[tuple[int, int], int] = {}
    for t in np.concatenate([mb.event_times_us(b) for b in batches]):
        start = S + (int(t) - S) // (10 * S) * 10 * S
        expected[(start, start + 10 * S)] = expected.get((start, start + 10 * S), 0) + 1
    p = make_pipeline(streaming=False)
    windowed = p | beam.Create(batches) | EventTimeWindow(FRAMED)
    counts = windowed.batches | beam.ParDo(_per_window) | beam.CombinePerKey(sum)
    assert_that(counts, equal_to(list(expected.items())))
    p.run().wait_until_finish()


def _dropped_rows(letter: Any) -> int:
    return int(letter.rows)


def test_lateness_judges_each_event_by_its_own_window_not_by_its_frame():
    # one frame [1, 11) s of windows of 2 s; the watermark at 6.5 s, no lateness
    # allowed: the windows [1, 3) and [3, 5) have expired, [5, 7) is late, the rest
    # are on time. A frame-wide verdict would have kept every event.
    times = np.array([1.5, 2.5, 3.5, 5.5, 7.5, 9.5]) * S
    batch = mb.with_watermark(
        mb.make_batch(["k"] * 6, times.astype(np.int64), np.zeros((6, 1)), event_ids=range(6)),
        int(6.5 * S),
    )
    p = make_pipeline(streaming=False)
    windowed = p | beam.Create([batch]) | EventTimeWindow(FRAMED, TriggerSpec())
    kept = windowed.batches | "Ids" >> beam.FlatMap(lambda b: b.column(mb.EVENT_ID).to_pylist())
    dropped = windowed.dropped | "Rows" >> beam.Map(_dropped_rows)
    assert_that(kept, equal_to([3, 4, 5]), label="kept")
    assert_that(dropped, equal_to([3]), label="dropped")
    p.run().wait_until_finish()


def _scored(batch: pa.RecordBatch, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng(seed)
    n = batch.num_rows
    labelled = mb.make_batch(
        batch.column(mb.KEY),
        mb.event_times_us(batch),
        mb.features_numpy(batch),
        labels=rng.integers(0, 2, n),
        event_ids=batch.column(mb.EVENT_ID),
    )
    versions = rng.integers(0, 4, n)
    return scored_batch(labelled, rng.integers(0, 2, n), rng.random(n).astype(np.float32), versions)


FIELDS = ("key", "window_start_us", "window_end_us", "events", "labelled", "accuracy")
FIELDS += ("mean_score", "min_version", "max_version")


def _row(stats: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(round(v, 9) if isinstance(v, float) else v for v in (stats[f] for f in FIELDS))


def _expected(batches: list[pa.RecordBatch]) -> list[tuple[Any, ...]]:
    """Per key and window of 2 s, from the rows themselves (no Beam, no frames)."""
    table = pa.Table.from_batches(batches).to_pydict()
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (key, t) in enumerate(zip(table["key"], table["event_time"], strict=True)):
        t_us = int(t.timestamp() * S) if hasattr(t, "timestamp") else int(t)
        start = S + (t_us - S) // (2 * S) * 2 * S
        groups.setdefault((key, start), []).append(i)
    out = []
    for (key, start), rows in groups.items():
        right = sum(table["label"][i] == table["prediction"][i] for i in rows)
        versions = [table["model_version"][i] for i in rows]
        stats = {
            "key": key,
            "window_start_us": start,
            "window_end_us": start + 2 * S,
            "events": len(rows),
            "labelled": len(rows),
            "accuracy": right / len(rows),
            "mean_score": sum(table["score"][i] for i in rows) / len(rows),
            "min_version": min(versions),
            "max_version": max(versions),
        }
        out.append(_row(stats))
    return out


@pytest.mark.parametrize("spec", [FRAMED, PLAIN], ids=["framed", "plain"])
def test_window_statistics_are_per_window_framed_or_not(spec):
    batches = [_scored(b, i) for i, b in enumerate(random_stream(5))]
    expected = _expected(batches)
    assert len(expected) > 100
    p = make_pipeline(streaming=False)
    windowed = p | beam.Create(batches) | EventTimeWindow(spec)
    rows = windowed.batches | WindowStats() | beam.FlatMap(rows_of) | beam.Map(_row)
    assert_that(rows, equal_to(expected))
    p.run().wait_until_finish()
