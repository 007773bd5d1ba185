"""Online learning: no leakage in either mode, on the streaming and batch runners."""

from __future__ import annotations

import functools

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest

from model import batch as mb
from model.batch import split_by_key
from model.learn.learner import LearnerConfig
from model.mlp import MLPClassifier
from tests.collect import Collect, rows_of, take
from tests.conftest import make_pipeline
from transforms import (
    EventTimeWindow,
    OnlineClassifier,
    OnlineConfig,
    PrequentialLearner,
    WindowSpec,
)
from transforms.io import replay

S = 1_000_000
WINDOW_S = 10.0
FLIP_S = 60.0  # labels flip here: windows 0-5 one concept, 6-11 the opposite


def flipping_stream(keys=("a",), per_batch=100, rate=50.0, seconds=120.0, seed=0):
    """Chunks of ``per_batch`` events; label = [x0 > 0], inverted from FLIP_S on.

    A key named ``inv-*`` has the opposite labels throughout (for per-key tests).
    """
    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    t_us = (np.arange(n) / rate * 1000).astype(np.int64) * 1000
    x = rng.standard_normal((n, 2)).astype(np.float32)
    key = np.array([keys[i % len(keys)] for i in range(n)], dtype=object)
    y = (x[:, 0] > 0).astype(np.int64)
    flipped = t_us >= FLIP_S * S
    inverted = np.array([k.startswith("inv-") for k in key])
    y = np.where(flipped ^ inverted, 1 - y, y)
    chunks = []
    for start in range(0, n, per_batch):
        sl = slice(start, start + per_batch)
        batch = mb.make_batch(
            key[sl].tolist(), t_us[sl], x[sl], labels=y[sl], event_ids=np.arange(n)[sl]
        )
        chunks.append((batch, int(t_us[sl].max())))
    return chunks


def factory():
    return functools.partial(MLPClassifier, 2, (16,), 2, seed=0)


def run(mode: str, streaming: bool, chunks, per_key: bool = False, step_rows=None, runner="direct"):
    """Predictions as rows (event_id, key, window index, version, correct, prediction).
    ``runner="flink"``: on Flink's embedded mini-cluster (LOOPBACK: the SDK workers run
    in this process, so the collector sees their rows)."""
    cfg = OnlineConfig(
        step_rows=step_rows,
        learner=LearnerConfig(lr=0.05, seed=0, standardize=step_rows is not None),
    )
    if runner == "flink":
        from runners.direct import direct_options
        from runners.flink import FlinkSettings, flink_args

        options = direct_options(streaming=streaming, extra=flink_args(FlinkSettings()))
        p = beam.Pipeline(runner="FlinkRunner", options=options)
    else:
        p = make_pipeline(streaming=streaming)
    if streaming:
        batches = replay(p, [(b, wm, []) for b, wm in chunks]).batches
    else:
        batches = p | beam.Create([b for b, _ in chunks])
    windowed = (batches | EventTimeWindow(WindowSpec("fixed", size_s=WINDOW_S))).batches
    out = windowed | OnlineClassifier(factory(), cfg, mode=mode, per_key=per_key)
    name = f"online-{mode}-{streaming}-{per_key}-{step_rows}-{runner}"
    _ = out.predictions | beam.FlatMap(_rows) | beam.ParDo(Collect(name))
    stats = out.stats | "StatsRows" >> beam.FlatMap(rows_of)
    _ = stats | "CollectStats" >> beam.ParDo(Collect(name + "-stats"))
    p.run().wait_until_finish()
    rows = take(name)
    STATS[(mode, streaming, per_key)] = take(name + "-stats")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "an event was scored twice"
    return rows


STATS: dict = {}


def _rows(batch: pa.RecordBatch, window=beam.DoFn.WindowParam):
    """... and last, the index of the Beam window the prediction batch is in."""
    in_window = int(window.start.micros // (WINDOW_S * S))
    times = mb.event_times_us(batch)
    prediction = batch.column("prediction").to_numpy()
    correct = prediction == batch.column("label").to_numpy()
    for i, (eid, key, ver) in enumerate(
        zip(
            batch.column("event_id").to_pylist(),
            batch.column("key").to_pylist(),
            batch.column("model_version").to_pylist(),
            strict=True,
        )
    ):
        window_index = int(times[i] // (WINDOW_S * S))
        yield (eid, key, window_index, ver, bool(correct[i]), int(prediction[i]), in_window)


def accuracy(rows, window, key=None):
    sel = [r[4] for r in rows if r[2] == window and (key is None or r[1] == key)]
    return sum(sel) / len(sel)


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "batch"])
def test_decoupled_model_trained_through_window_k_scores_window_k_plus_1(streaming):
    chunks = flipping_stream()
    rows = run("decoupled", streaming, chunks)
    assert len(rows) == sum(b.num_rows for b, _ in chunks)  # none lost
    # Window k is scored by version k: trained on windows 0..k-1, never on k or later.
    assert all(r[3] == r[2] for r in rows)
    assert accuracy(rows, 5) > 0.9  # learned the first concept
    assert accuracy(rows, 6) < 0.2  # after the flip: scored by a model of the past only
    assert accuracy(rows, 11) > 0.8  # and it relearns


@pytest.mark.parametrize(
    ("mode", "streaming"), [("coupled", False), ("decoupled", False), ("coupled", True)]
)
def test_large_batches_in_small_steps_learn_like_small_batches(mode, streaming):
    # step_rows=25 on batches of 100 (rows shuffled within each batch: the step puts
    # them in event-time order) takes the same optimizer steps as batches of 25.
    rng = np.random.default_rng(5)
    shuffled = [
        (mb.take(b, rng.permutation(b.num_rows)), wm) for b, wm in flipping_stream(per_batch=100)
    ]
    large = run(mode, streaming, shuffled, step_rows=25)
    small = run(mode, streaming, flipping_stream(per_batch=25), step_rows=1000)
    assert sorted(large) == sorted(small)
    assert accuracy(large, 5) > 0.9


@pytest.mark.parametrize("streaming", [True, False], ids=["streaming", "batch"])
def test_coupled_predicts_each_batch_before_learning_it(streaming):
    chunks = flipping_stream()
    rows = run("coupled", streaming, chunks)
    assert len(rows) == sum(b.num_rows for b, _ in chunks)
    assert all(r[3] == r[2] for r in rows)  # one version per window of training
    stats = {
        r["window_start_us"] // (int(WINDOW_S) * S): r for r in STATS[("coupled", streaming, False)]
    }
    assert sorted(stats) == list(range(12))
    for w, r in stats.items():  # the step's own window statistics match its predictions
        assert r["pane"] == "ON_TIME" and r["min_version"] == r["max_version"] == w
        assert r["accuracy"] == pytest.approx(accuracy(rows, w))
    first_after_flip = [r[4] for r in rows if int(FLIP_S * 50) <= r[0] < int(FLIP_S * 50) + 100]
    assert sum(first_after_flip) / len(first_after_flip) < 0.2  # model had not seen it
    assert accuracy(rows, 5) > 0.9 and accuracy(rows, 11) > 0.8


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "streaming"), [("decoupled", True), ("coupled", True), ("decoupled", False)]
)
def test_no_leakage_on_flink_either(mode, streaming):
    from runners.flink import FlinkUnavailable, job_server

    try:
        job_server()
    except FlinkUnavailable as err:
        pytest.skip(str(err))
    chunks = flipping_stream()
    rows = run(mode, streaming, chunks, runner="flink")
    assert len(rows) == sum(b.num_rows for b, _ in chunks)
    assert all(r[3] == r[2] for r in rows)  # window k scored by version k: trained on < k
    first_after_flip = [r[4] for r in rows if int(FLIP_S * 50) <= r[0] < int(FLIP_S * 50) + 100]
    assert sum(first_after_flip) / len(first_after_flip) < 0.2  # no model had seen them
    assert accuracy(rows, 5) > 0.9 and accuracy(rows, 11) > 0.8
    if mode == "decoupled":
        assert accuracy(rows, 6) < 0.2


def test_same_input_twice_gives_the_same_versions_and_predictions():
    chunks = flipping_stream(seconds=60.0)
    assert sorted(run("coupled", True, chunks)) == sorted(run("coupled", True, chunks))
    assert sorted(run("decoupled", False, chunks)) == sorted(run("decoupled", False, chunks))


def test_per_key_models_are_isolated():
    chunks = flipping_stream(keys=("a", "inv-b"), seconds=60.0)
    per_key = run("coupled", True, chunks, per_key=True)
    shared = run("coupled", True, chunks, per_key=False)
    for key in ("a", "inv-b"):
        assert accuracy(per_key, 5, key) > 0.9  # each key learned its own concept
    assert accuracy(shared, 5) < 0.7  # one model cannot fit opposite concepts


def test_split_by_key_keeps_rows():
    batch = mb.make_batch(
        ["b", "a", "b", "c"], [0, 1, 2, 3], np.zeros((4, 1)), event_ids=[0, 1, 2, 3]
    )
    parts = dict(split_by_key(batch))
    assert {k: v.column("event_id").to_pylist() for k, v in parts.items()} == {
        "b": [0, 2],
        "a": [1],
        "c": [3],
    }


def test_classifier_validation():
    with pytest.raises(ValueError, match="per-key models need mode='coupled'"):
        OnlineClassifier(factory(), mode="decoupled", per_key=True)
    with pytest.raises(ValueError, match="mode must be"):
        OnlineClassifier(factory(), mode="both")  # type: ignore[arg-type]


def _trained_until(update):
    artifact = update[1] if isinstance(update, tuple) else update
    yield (artifact.version, artifact.trained_until_us)


def _event_versions(batch: pa.RecordBatch):
    yield from zip(
        mb.event_times_us(batch).tolist(), batch.column("model_version").to_pylist(), strict=True
    )


@pytest.mark.parametrize("mode", ["decoupled", "coupled"])
def test_late_data_never_scored_by_a_model_trained_on_later_data(mode):
    from model.streams.synthetic import SyntheticConfig, generate
    from transforms import TriggerSpec

    cfg = SyntheticConfig(
        num_events=6000, num_features=4, late_fraction=0.05, late_delay_s=15.0, seed=3
    )
    chunks = [(c.batch, c.watermark_us) for c in generate(cfg)]
    online = OnlineConfig(learner=LearnerConfig(seed=0))
    p = make_pipeline(streaming=True)
    batches = replay(p, [(b, wm, []) for b, wm in chunks]).batches
    trigger = TriggerSpec(allowed_lateness_s=30.0)
    windowed = (batches | EventTimeWindow(WindowSpec("fixed", size_s=WINDOW_S), trigger)).batches
    factory = functools.partial(MLPClassifier, 4, (16,), 2, seed=0)
    out = windowed | OnlineClassifier(factory, online, mode=mode)
    _ = out.predictions | beam.FlatMap(_event_versions) | beam.ParDo(Collect(f"late-{mode}"))
    _ = out.updates | beam.ParDo(_trained_until) | "C2" >> beam.ParDo(Collect(f"up-{mode}"))
    p.run().wait_until_finish()
    rows, updates = take(f"late-{mode}"), take(f"up-{mode}")
    trained = dict(updates)  # version -> newest event time it learned from
    assert len(trained) > 12  # late data made extra versions, not just one per window
    for t_us, version in rows:  # no row is scored by a model that learned from its future
        assert version == 0 or trained[version] < t_us, (t_us, version, trained[version])
    assert len(rows) > 5900


def _entry(window: int, serial: int) -> bytes:
    from model.online.book import _HEADER

    return _HEADER.pack((window + 1) * 10 * S, serial) + b"batch"


def _replay_firings(arrivals):
    """Drive the pending bag as the stateful step does: ``arrivals`` is a list of
    ('add', window) and ('fire', window) events. Returns the windows taken per firing,
    the largest the bag ever was and how many entries were rewritten in all."""
    from model.online.book import MS, Book, entry_header

    bag: list[bytes] = []
    book = Book()
    taken, largest, rewritten = [], 0, 0
    for what, window in arrivals:
        if what == "add":
            bag.append(_entry(window, book.serial))
            book.serial += 1
        else:
            ready, rewrite = book.take_ready(list(bag), (window + 1) * 10 * S - MS)
            taken.append(sorted(entry_header(d)[0] // (10 * S) - 1 for d in ready))
            if rewrite is not None:
                bag = list(rewrite)
                rewritten += len(rewrite)
        largest = max(largest, len(bag))
    return taken, largest, rewritten


def test_pending_bag_stays_small_in_a_live_stream():
    # Each window's batches arrive; one batch of the next window is already in when
    # the window fires, as in a live stream.
    arrivals = [("add", 0)]
    for w in range(200):
        arrivals += [("add", w), ("add", w), ("add", w + 1), ("fire", w)]
    taken, largest, _ = _replay_firings(arrivals)
    assert taken[0] == [0, 0, 0] and all(t == [w] * 3 for w, t in enumerate(taken[1:], 1))
    assert largest <= 8  # not every batch of the run


def test_pending_bag_in_a_bounded_run_is_rewritten_a_linear_number_of_times():
    arrivals = [("add", w) for w in range(300) for _ in range(4)]
    arrivals += [("fire", w) for w in range(300)]
    taken, _, rewritten = _replay_firings(arrivals)
    assert taken == [[w] * 4 for w in range(300)]  # each batch once, window by window
    assert rewritten <= 2 * len(arrivals)


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
def test_windows_fired_out_of_order_learn_in_order_and_keep_their_windows(mode):
    """A bounded run whose batches come newest window first: the FnApiRunner delivers
    the window timers in the order they were set, so the first firing is the newest
    window's and takes every window. The step still learns them in event-time order,
    publishes one version per window, and puts each prediction in its own window:
    the same rows as when the batches come in order."""
    chunks = flipping_stream(seconds=60.0)
    in_order = run(mode, False, chunks)
    reverse = run(mode, False, chunks[::-1])
    assert sorted(reverse) == sorted(in_order)
    assert all(r[3] == r[2] for r in reverse)  # version k scored window k
    assert all(r[6] == r[2] for r in reverse)  # each prediction in its own window
    if mode == "coupled":  # the step's own statistics: one ON_TIME row per window
        stats = STATS[("coupled", False, False)]
        assert sorted(r["window_start_us"] // (int(WINDOW_S) * S) for r in stats) == list(range(6))
        assert {r["pane"] for r in stats} == {"ON_TIME"}


def _update_keys(update):
    key, artifact = update
    yield key, artifact.version


def test_per_key_models_take_any_key_the_empty_one_too():
    chunks = flipping_stream(keys=("", "inv-b"), seconds=40.0)
    p = make_pipeline(streaming=True)
    batches = replay(p, [(b, wm, []) for b, wm in chunks]).batches
    windowed = (batches | EventTimeWindow(WindowSpec("fixed", size_s=WINDOW_S))).batches
    out = windowed | PrequentialLearner(factory(), OnlineConfig(), per_key=True)
    _ = out.updates | beam.FlatMap(_update_keys) | beam.ParDo(Collect("empty-key-updates"))
    _ = out.predictions | beam.FlatMap(_rows) | "Rows" >> beam.ParDo(Collect("empty-key-rows"))
    p.run().wait_until_finish()
    updates, rows = take("empty-key-updates"), take("empty-key-rows")
    assert {k for k, _ in updates} == {"", "inv-b"}  # a model of its own for each
    for key in ("", "inv-b"):  # each key's versions count its own windows: 1, 2, 3, 4
        assert sorted(v for k, v in updates if k == key) == [1, 2, 3, 4]
    assert len(rows) == sum(b.num_rows for b, _ in chunks)
