"""Delayed labels joined in event time; too-late and orphan labels accounted for."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from model import batch as mb
from tests.collect import Collect, take
from tests.conftest import make_pipeline
from transforms.io import replay
from transforms.online.labels import JoinLabels, attach_labels

S = 1_000_000


def events(ids, key="a"):
    ids = np.asarray(ids)
    return mb.make_batch([key] * len(ids), ids * S, np.zeros((len(ids), 2)), event_ids=ids)


def labels(ids, key="a"):
    ids = np.asarray(ids)
    return pa.RecordBatch.from_arrays(
        [
            pa.array([key] * len(ids)),
            pa.array(ids * S, type=mb.EVENT_TIME_TYPE),
            pa.array(ids, type=pa.int64()),
            pa.array(ids % 2, type=pa.int64()),
        ],
        names=[mb.KEY, mb.EVENT_TIME, mb.EVENT_ID, mb.LABEL],
    )


def _pairs(batch: pa.RecordBatch, a: str, b: str):
    first = mb.event_times_us(batch).tolist() if a == "event_time" else batch.column(a).to_pylist()
    return zip(first, batch.column(b).to_pylist(), strict=True)


def _joined(items: list[tuple[pa.RecordBatch, int]]) -> tuple[beam.Pipeline, Any]:
    """A streaming replay of event and label batches, joined in windows of 10 s with
    10 s of allowed lateness."""
    p = make_pipeline(streaming=True)
    src = replay(p, [(b, wm, []) for b, wm in items])
    is_label = src.batches | beam.Partition(lambda b, n: int("features" not in b.schema.names), 2)
    return p, is_label[0] | JoinLabels(is_label[1], window_s=10.0, allowed_lateness_s=10.0)


def test_attach_labels_matches_by_event_id():
    matched, event_hit, label_hit, duplicate = attach_labels(
        events([1, 2, 3, 4]), labels([4, 2, 9])
    )
    assert matched.column(mb.EVENT_ID).to_pylist() == [2, 4]
    assert matched.column(mb.LABEL).to_pylist() == [0, 0]
    assert event_hit.tolist() == [False, True, False, True]
    assert label_hit.tolist() == [True, True, False]
    assert not duplicate.any()


def test_an_event_takes_the_first_of_its_labels_and_the_others_are_duplicates():
    matched, _, label_hit, duplicate = attach_labels(events([1, 2]), labels([2, 5, 2, 2]))
    assert matched.column(mb.EVENT_ID).to_pylist() == [2]
    assert label_hit.tolist() == [True, False, False, False]
    assert duplicate.tolist() == [False, False, True, True]


def test_duplicate_labels_are_dead_lettered_and_every_label_is_accounted_for():
    items = [
        (labels([1, 1]), 1 * S),  # two labels wait for event 1
        (events([1, 2, 3]), 3 * S),  # event 1 takes the first; the other is a duplicate
        (labels([2, 2, 3]), 4 * S),  # 2 twice in one batch: one joins, one is a duplicate
        (events([21]), 35 * S),
    ]
    p, joined = _joined(items)
    _ = joined.labelled | beam.FlatMap(_pairs, "event_id", "label") | beam.ParDo(Collect("j2"))
    _ = joined.dead_letter | "Dead" >> beam.ParDo(Collect("d2"))
    p.run().wait_until_finish()
    assert sorted(take("j2")) == [(1, 1), (2, 0), (3, 1)]
    dead = take("d2")
    assert sorted(i for d in dead for i in d["event_ids"]) == [1, 2]
    assert all(d["reason"].startswith("duplicate label") for d in dead)
    assert 3 + sum(d["rows"] for d in dead) == 5  # 5 labels in = 3 joined + 2 set aside


def test_a_label_that_comes_at_its_expiry_is_late():
    # window [0, 10) with 10 s lateness expires at 20 s: a label that comes when the
    # source's watermark is at 20 s may find its event gone, so it is late, never an
    # "unknown event" (a batch carries the watermark in force when it comes)
    items = [(events([1]), 1 * S), (events([15]), 20 * S), (labels([1]), 21 * S)]
    p, joined = _joined(items)
    _ = joined.dead_letter | "Dead" >> beam.ParDo(Collect("d3"))
    p.run().wait_until_finish()
    assert [d["reason"].split(":")[0] for d in take("d3")] == ["late"]


def test_delayed_labels_join_and_too_late_or_orphan_labels_are_dead_lettered():
    # Window 10 s, allowed lateness 10 s: a label may come up to ~10 s after its window.
    items = [
        (events([1, 2, 3]), 3 * S),
        (labels([1]), 4 * S),  # on time
        (events([11, 12]), 12 * S),
        (labels([2, 12]), 15 * S),  # 2 is late but within lateness
        (events([21]), 25 * S),  # the watermark passes 20 s: window [0, 10) has expired
        (labels([3]), 26 * S),  # too late
        (labels([50]), 27 * S),  # no such event: orphan
    ]
    p, joined = _joined(items)
    _ = joined.labelled | beam.FlatMap(_pairs, "event_id", "label") | beam.ParDo(Collect("joined"))
    _ = joined.dead_letter | "Dead" >> beam.ParDo(Collect("dead"))
    p.run().wait_until_finish()
    assert sorted(take("joined")) == [(1, 1), (2, 0), (12, 0)]
    dead = take("dead")
    reasons = {tuple(d["event_ids"]): d["reason"] for d in dead}
    assert reasons[(3,)].startswith("late")
    assert reasons[(50,)].startswith("label for an unknown event")
    # Every label is accounted for: 5 in = 3 joined + 2 dead-lettered.
    assert 3 + sum(d["rows"] for d in dead) == 5


def test_coupled_mode_refuses_separate_labels():
    from model.mlp import MLPClassifier
    from transforms import OnlineClassifier, OnlineConfig

    with pytest.raises(ValueError, match="need mode='decoupled'"):
        OnlineClassifier(MLPClassifier, OnlineConfig(), mode="coupled", labelled=object())  # type: ignore[arg-type]


def test_online_learning_from_delayed_labels_is_leak_free():
    import functools

    from model.learn.learner import LearnerConfig
    from model.mlp import MLPClassifier
    from transforms import EventTimeWindow, OnlineClassifier, OnlineConfig, TriggerSpec, WindowSpec

    rng = np.random.default_rng(0)
    n, rate, delay_s = 3000, 50, 5  # 60 s of events; each label comes 5 s later
    t_us = np.arange(n) * (S // rate)
    x = rng.standard_normal((n, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    items = []
    for start in range(0, n, 100):
        sl = slice(start, start + 100)
        ev = mb.make_batch(["a"] * 100, t_us[sl], x[sl], event_ids=np.arange(n)[sl])
        items.append((ev, int(t_us[sl].max())))
        done = t_us < t_us[sl].max() - delay_s * S  # labels known by now
        known = np.flatnonzero(
            done
            & ~np.isin(
                np.arange(n),
                [
                    i
                    for b, _ in items[:-1]
                    if "features" not in b.schema.names
                    for i in b.column("event_id").to_pylist()
                ],
            )
        )
        if len(known):
            lab = pa.RecordBatch.from_arrays(
                [
                    pa.array(["a"] * len(known)),
                    pa.array(t_us[known], type=mb.EVENT_TIME_TYPE),
                    pa.array(known, type=pa.int64()),
                    pa.array(y[known], type=pa.int64()),
                ],
                names=[mb.KEY, mb.EVENT_TIME, mb.EVENT_ID, mb.LABEL],
            )
            items.append((lab, int(t_us[sl].max())))
    p = make_pipeline(streaming=True)
    src = replay(p, [(b, wm, []) for b, wm in items])
    # Filters, not Partition: the legacy DirectRunner hands empty Partition bundles to a
    # side-input ParDo and fails on them.
    ev = src.batches | "Events" >> beam.Filter(lambda b: "features" in b.schema.names)
    lab = src.batches | "Labels" >> beam.Filter(lambda b: "features" not in b.schema.names)
    window = WindowSpec("fixed", size_s=10.0)
    late_ok = TriggerSpec(allowed_lateness_s=10.0)
    events_w = (ev | "WinEvents" >> EventTimeWindow(window, late_ok)).batches
    joined = ev | JoinLabels(lab, window_s=10.0, allowed_lateness_s=10.0)
    factory = functools.partial(MLPClassifier, 2, (16,), 2, seed=0)
    cfg = OnlineConfig(learner=LearnerConfig(lr=0.05, seed=0))
    out = events_w | OnlineClassifier(factory, cfg, labelled=joined.labelled)
    _ = (
        out.predictions
        | beam.FlatMap(_pairs, "event_time", "model_version")
        | beam.ParDo(Collect("delayed-rows"))
    )
    _ = (
        out.updates
        | beam.Map(lambda a: (a.version, a.trained_until_us))
        | "U" >> beam.ParDo(Collect("delayed-up"))
    )
    p.run().wait_until_finish()
    rows, trained = take("delayed-rows"), dict(take("delayed-up"))
    assert len(rows) == n and len(trained) >= 4
    for t, version in rows:
        assert version == 0 or trained[version] < t


def test_events_whose_label_never_comes_are_counted_once_their_wait_is_over():
    items = [
        (events([1, 2, 3]), 3 * S),
        (labels([1]), 4 * S),
        (events([11]), 12 * S),
        (events([31]), 35 * S),  # the watermark passes [0, 10) + 10 s: 2 and 3 give up
    ]
    p, joined = _joined(items)
    _ = joined.labelled | beam.FlatMap(_pairs, "event_id", "label") | beam.ParDo(Collect("j2"))
    _ = joined.unlabelled | "Never" >> beam.ParDo(Collect("never"))
    p.run().wait_until_finish()
    never = take("never")
    assert sorted(take("j2")) == [(1, 1)]
    assert sorted(i for r in never for i in r["event_ids"]) == [2, 3, 11, 31]
    # every event is either joined or counted as never labelled: 5 = 1 + 4
    assert 1 + sum(r["rows"] for r in never) == 5
