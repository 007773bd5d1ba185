"""Micro-batch windowing must agree with Beam's per-event windowing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import Timestamp

from model import batch as mb
from tests.conftest import make_pipeline
from transforms.window import EventTimeWindow, TriggerSpec, WindowSpec, split_batch

SPECS = [
    WindowSpec("fixed", size_s=10.0),
    WindowSpec("fixed", size_s=7.0, offset_s=2.0),
    WindowSpec("sliding", size_s=10.0, period_s=5.0),
    WindowSpec("sliding", size_s=10.0, period_s=3.0),
    WindowSpec("sliding", size_s=4.0, period_s=4.0),
]


def random_stream(seed: int, n: int = 3000, keys: int = 4) -> list[pa.RecordBatch]:
    """Out-of-order events (ms resolution) cut into batches of random sizes."""
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(0, 120_000, n)) * 1000
    times = times + rng.integers(-8_000, 8_000, n) * 1000 * (rng.random(n) < 0.3)
    batch = mb.make_batch(
        [f"k{k}" for k in rng.integers(0, keys, n)],
        times,
        rng.standard_normal((n, 2)),
        event_ids=np.arange(n),
    )
    cuts = np.sort(rng.choice(np.arange(1, n), size=n // 100, replace=False))
    return [batch.slice(a, b - a) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def windows_of(spec: WindowSpec, t_us: int) -> set[bw.BoundedWindow]:
    ctx = bw.WindowFn.AssignContext(Timestamp(micros=t_us))
    return set(spec.window_fn().assign(ctx))


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_event_of_a_piece_has_the_pieces_windows(spec, seed):
    straddled = 0
    for batch in random_stream(seed):
        pieces = split_batch(batch, spec)
        straddled += len(pieces) > 1
        assert sum(p.num_rows for p in pieces) == batch.num_rows
        for piece in pieces:
            times = mb.event_times_us(piece)
            piece_windows = windows_of(spec, int(times.min()))
            for t in np.unique(times):
                assert windows_of(spec, int(t)) == piece_windows
    assert straddled > 10  # the stream really had batches crossing boundaries


def _per_window_counts(element: Any, window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
    rows = element.num_rows if isinstance(element, pa.RecordBatch) else 1
    yield ((window.start.micros, window.end.micros), rows)


@pytest.mark.parametrize("spec", SPECS[:4], ids=repr)
def test_batch_pipeline_counts_equal_per_event_pipeline(spec):
    batches = random_stream(7)
    expected: dict[tuple[int, int], int] = {}
    for batch in batches:
        for t in mb.event_times_us(batch):
            for w in windows_of(spec, int(t)):
                k = (w.start.micros, w.end.micros)
                expected[k] = expected.get(k, 0) + 1
    events = [
        bw.TimestampedValue(1, Timestamp(micros=int(t)))
        for b in batches
        for t in mb.event_times_us(b)
    ]
    with make_pipeline(streaming=False) as p:
        per_event = (
            p
            | "Events" >> beam.Create(events)
            | "EventWindows" >> beam.WindowInto(spec.window_fn())
            | "EventCounts" >> beam.ParDo(_per_window_counts)
            | "EventSum" >> beam.CombinePerKey(sum)
        )
        per_batch = (
            (p | "Batches" >> beam.Create(batches) | "Window" >> EventTimeWindow(spec)).batches
            | "BatchCounts" >> beam.ParDo(_per_window_counts)
            | "BatchSum" >> (beam.CombinePerKey(sum))
        )
        assert_that(per_event, equal_to(list(expected.items())), label="PerEvent")
        assert_that(per_batch, equal_to(list(expected.items())), label="PerBatch")


def _session_rows(kv: Any, window: Any = beam.DoFn.WindowParam) -> Iterator[Any]:
    key, count = kv
    yield (key, window.start.micros, window.end.micros, count)


def _key_rows(batch: pa.RecordBatch) -> Iterator[tuple[str, int]]:
    keys = set(batch.column(mb.KEY).to_pylist())
    assert len(keys) == 1, "session pieces hold one key"
    yield (keys.pop(), batch.num_rows)


def test_session_windows_equal_per_event_sessions():
    batches = random_stream(3, n=1500, keys=3)
    gap = 2.0
    events = [
        bw.TimestampedValue((k, 1), Timestamp(micros=int(t)))
        for b in batches
        for k, t in zip(b.column(mb.KEY).to_pylist(), mb.event_times_us(b), strict=True)
    ]
    with make_pipeline(streaming=False) as p:
        per_event = (
            p
            | "Events" >> beam.Create(events).with_output_types(tuple[str, int])
            | "EventSessions" >> beam.WindowInto(bw.Sessions(gap))
            | "EventSum" >> beam.CombinePerKey(sum)
            | "EventRows" >> beam.ParDo(_session_rows)
        )
        per_batch = (
            (
                p
                | "Batches" >> beam.Create(batches)
                | "Window" >> EventTimeWindow(WindowSpec("session", gap_s=gap))
            ).batches
            | "KeyRows" >> beam.FlatMap(_key_rows)
            | "BatchSum" >> beam.CombinePerKey(sum)
            | "BatchRows" >> beam.ParDo(_session_rows)
        )
        # Compare per-event sessions (computed here from first principles too).
        assert_that(per_batch, equal_to(_sessions(events, gap)), label="PerBatch")
        assert_that(per_event, equal_to(_sessions(events, gap)), label="PerEvent")


def _sessions(events: list[Any], gap_s: float) -> list[tuple[str, int, int, int]]:
    gap = int(gap_s * 1_000_000)
    by_key: dict[str, list[int]] = {}
    for e in events:
        by_key.setdefault(e.value[0], []).append(e.timestamp.micros)
    out = []
    for key, times in by_key.items():
        times.sort()
        start, last, n = times[0], times[0], 0
        for t in times:
            if t - last >= gap:
                out.append((key, start, last + gap, n))
                start, n = t, 0
            last, n = t, n + 1
        out.append((key, start, last + gap, n))
    return out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fixed", "size_s": 0}, "window size must be > 0"),
        ({"kind": "sliding", "size_s": 5, "period_s": None}, "period_s > 0"),
        ({"kind": "sliding", "size_s": 5, "period_s": 6}, "must be <= size_s"),
        ({"kind": "session", "gap_s": -1}, "gap must be > 0"),
        ({"kind": "tumbling"}, "window kind must be"),
        ({"kind": "fixed", "size_s": 0.0005}, "whole number of milliseconds"),
    ],
)
def test_window_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowSpec(**kwargs)


def test_trigger_spec_validation():
    with pytest.raises(ValueError, match="early_count must be > 0"):
        TriggerSpec(early_count=0)
    with pytest.raises(ValueError, match="allowed_lateness_s must be >= 0"):
        TriggerSpec(allowed_lateness_s=-1)
    with pytest.raises(ValueError, match="whole number of seconds"):
        TriggerSpec(early_after_s=1.5)
