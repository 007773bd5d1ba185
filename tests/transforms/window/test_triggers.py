"""Early, on-time and late panes, and late data, driven by TestStream watermarks."""

from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to

from model import batch as mb
from model.artifact import ModelArtifact
from model.mlp import MLPClassifier
from tests.collect import rows_of
from tests.conftest import make_pipeline
from transforms import EventTimeWindow, StreamingInference, TriggerSpec, WindowSpec, WindowStats
from transforms.io import replay

S = 1_000_000  # microseconds per second
ARTIFACT = ModelArtifact.from_module(MLPClassifier(2, seed=0), version=5)


def events(*seconds: float, key: str = "a", first_id: int = 0) -> pa.RecordBatch:
    n = len(seconds)
    return mb.make_batch(
        [key] * n,
        np.array([round(s * 1000) * 1000 for s in seconds]),
        np.zeros((n, 2)),
        labels=np.zeros(n, dtype=np.int64),
        event_ids=np.arange(first_id, first_id + n),
    )


def run_panes(chunks, trigger: TriggerSpec, size_s: float = 10.0):
    """Replay ``(batch, watermark_after_s)`` chunks; return pane rows and dead letters."""
    items = [(b, round(wm * S), []) for b, wm in chunks]
    p = make_pipeline(streaming=True)
    src = replay(p, items)
    win = src.batches | EventTimeWindow(WindowSpec("fixed", size_s=size_s), trigger)
    panes = (
        win.batches
        | StreamingInference(ARTIFACT, device="cpu")
        | WindowStats()
        | beam.FlatMap(rows_of)
    )
    return p, panes, win.dropped


def pane_tuples(panes):
    return panes | "Tuples" >> beam.Map(
        lambda r: (r["key"], r["window_start_us"] // S, r["pane"], r["events"])
    )


def test_late_data_dropped_beyond_lateness_accepted_within_and_accounted():
    chunks = [
        (events(1, 2, 3, first_id=0), 12),  # window [0, 10) fires on time at wm 12
        (events(4, first_id=3), 20),  # late, within 5 s lateness (wm 12 <= 15): accepted
        (events(5, 21, first_id=4), 30),  # t=5 expired (wm 20 > 15): dropped; t=21 on time
    ]
    p, panes, dropped = run_panes(chunks, TriggerSpec(allowed_lateness_s=5.0))
    assert_that(
        pane_tuples(panes),
        equal_to([("a", 0, "ON_TIME", 3), ("a", 0, "LATE", 1), ("a", 20, "ON_TIME", 1)]),
        label="Panes",
    )
    assert_that(
        dropped | "Ids" >> beam.Map(lambda r: (r["rows"], tuple(r["event_ids"]), r["reason"][:4])),
        equal_to([(1, (4,), "late")]),
        label="Dropped",
    )
    # The dead letters keep the input's (global) windows, and their PCollection says
    # so (runners encode its elements with that windowing's coder), not the pieces'
    # windowing: they flatten with other dead letters, as the pipelines do.
    others = p | "OtherDeadLetters" >> beam.Create([{"rows": 2}])
    assert dropped.windowing == others.windowing
    rows = (dropped, others) | beam.Flatten() | "Rows" >> beam.Map(lambda r: r["rows"])
    assert_that(rows, equal_to([1, 2]), label="Flattened")
    p.run().wait_until_finish()


def test_without_lateness_every_late_event_is_dead_lettered():
    chunks = [(events(1, 2, first_id=0), 12), (events(3, 4, first_id=2), 13)]
    p, panes, dropped = run_panes(chunks, TriggerSpec(allowed_lateness_s=0.0))
    assert_that(pane_tuples(panes), equal_to([("a", 0, "ON_TIME", 2)]), label="Panes")
    assert_that(
        dropped | "Rows" >> beam.Map(lambda r: r["rows"]),
        equal_to([2]),
        label="Dropped",
    )
    p.run().wait_until_finish()


@pytest.mark.parametrize(
    ("accumulating", "expected"),
    [
        (
            False,
            [
                ("a", 0, "EARLY", 2),
                ("a", 0, "EARLY", 2),
                ("a", 0, "ON_TIME", 1),
                ("a", 0, "LATE", 1),
            ],
        ),
        (
            True,
            [
                ("a", 0, "EARLY", 2),
                ("a", 0, "EARLY", 4),
                ("a", 0, "ON_TIME", 5),
                ("a", 0, "LATE", 6),
            ],
        ),
    ],
    ids=["discarding", "accumulating"],
)
def test_early_on_time_and_late_panes(accumulating, expected):
    chunks = [
        (events(1, first_id=0), 1),
        (events(2, first_id=1), 2),  # 2 elements -> EARLY
        (events(3, first_id=2), 3),
        (events(4, first_id=3), 4),  # 2 more -> EARLY
        (events(5, first_id=4), 11),  # watermark past the end -> ON_TIME
        (events(6, first_id=5), 12),  # late, within lateness -> LATE
    ]
    trigger = TriggerSpec(early_count=2, allowed_lateness_s=5.0, accumulating=accumulating)
    p, panes, _ = run_panes(chunks, trigger)
    assert_that(pane_tuples(panes), equal_to(expected))
    p.run().wait_until_finish()


def test_pieces_keep_the_smallest_event_time_as_timestamp():

    def stamp(batch, ts=beam.DoFn.TimestampParam):
        yield (ts.micros, mb.min_event_time_us(batch), batch.num_rows)

    chunks = [(events(9.5, 3.0, 12.0, 10.5, first_id=0), 20)]
    p = make_pipeline(streaming=True)
    src = replay(p, [(b, round(wm * S), []) for b, wm in chunks])
    win = src.batches | EventTimeWindow(WindowSpec("fixed", size_s=10.0))
    assert_that(
        win.batches | beam.ParDo(stamp),
        equal_to([(3 * S, 3 * S, 2), (int(10.5 * S), int(10.5 * S), 2)]),
    )
    p.run().wait_until_finish()


def test_early_pane_after_processing_time():
    chunks = [(events(1, first_id=0), 1), (events(2, first_id=1), 2), (events(3, first_id=2), 3)]
    chunks += [(events(4, first_id=3), 4), (events(5, first_id=4), 11)]
    items = [(b, round(wm * S), []) for b, wm in chunks]
    p = make_pipeline(streaming=True)
    src = replay(p, items, processing_time_per_chunk_s=2.0)
    trigger = TriggerSpec(early_after_s=5.0)
    win = src.batches | EventTimeWindow(WindowSpec("fixed", size_s=10.0), trigger)
    panes = (
        win.batches
        | StreamingInference(ARTIFACT, device="cpu")
        | WindowStats()
        | beam.FlatMap(rows_of)
    )
    rows = pane_tuples(panes)
    # The first element arrives at processing time 0; the pane fires once processing time
    # passes 5 s (after the third chunk), the rest comes on time.
    assert_that(rows, equal_to([("a", 0, "EARLY", 3), ("a", 0, "ON_TIME", 2)]))
    p.run().wait_until_finish()


class _BundleSizes(beam.DoFn):
    """Collects how many elements each bundle held."""

    def start_bundle(self):
        self._n = 0

    def process(self, element):
        self._n += 1
        return iter(())

    def finish_bundle(self):
        if self._n:
            _BUNDLES.append(self._n)


_BUNDLES: list[int] = []


@pytest.mark.parametrize("interval_s", [0.0, 5.0])
def test_periodic_watermarks_bundle_chunks_without_changing_results(interval_s):
    # One chunk per second of event time, watermark right behind it; a late chunk at
    # 14.5 s whose window [0, 10) closed at watermark 12 (no allowed lateness).
    chunks = [(events(t, first_id=t), t + 0.5) for t in range(12)]
    chunks.append((events(9, first_id=99), 14.5))
    chunks += [(events(t, first_id=t), t + 0.5) for t in range(15, 25)]
    _BUNDLES.clear()
    items = [(b, round(wm * S), []) for b, wm in chunks]
    p = make_pipeline(streaming=True)
    src = replay(p, items, watermark_interval_s=interval_s)
    _ = src.batches | beam.ParDo(_BundleSizes())
    win = src.batches | EventTimeWindow(WindowSpec("fixed", size_s=10.0), TriggerSpec())
    panes = (
        win.batches
        | StreamingInference(ARTIFACT, device="cpu")
        | WindowStats()
        | beam.FlatMap(rows_of)
    )
    # The same panes either way; the late chunk is dead-lettered either way (the
    # emitted watermark had passed its window's end, 10 s, by the time it arrived).
    assert_that(
        pane_tuples(panes),
        equal_to([("a", 0, "ON_TIME", 10), ("a", 10, "ON_TIME", 7), ("a", 20, "ON_TIME", 5)]),
    )
    dropped = win.dropped | "Ids" >> beam.FlatMap(lambda r: r["event_ids"])
    assert_that(dropped, equal_to([99]), label="late")
    p.run().wait_until_finish()
    assert sum(_BUNDLES) == len(chunks)
    assert max(_BUNDLES) == (1 if interval_s == 0 else 5)
