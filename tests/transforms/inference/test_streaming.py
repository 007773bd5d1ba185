"""Streaming inference: hot swap, event time, gathering, RunInference, keyed models."""

from __future__ import annotations

import functools

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import ModelMetadata, RunInference
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import Timestamp
from torch import nn

from model import batch as mb
from model.artifact import ModelArtifact
from model.vocabulary import MODEL, MODEL_VERSION, NAMESPACE
from tests.conftest import make_pipeline
from transforms import (
    EventTimeWindow,
    KeyedInference,
    ModelStore,
    StreamingInference,
    TorchModelHandlerNumpy,
    WindowSpec,
)
from transforms.io import replay

S = 1_000_000


class Constant(nn.Module):
    """Always predicts class ``k`` (of 4), so outputs say which model ran."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 4) + self.bias
        logits[:, self.k] = 5.0
        return logits


def constant(k: int, version: int) -> ModelArtifact:
    return ModelArtifact.from_module(Constant(k), version, factory=functools.partial(Constant, k))


def events(seconds: list[float], first_id: int, key: str = "a") -> pa.RecordBatch:
    n = len(seconds)
    return mb.make_batch(
        [key] * n,
        np.array([round(s * 1000) * 1000 for s in seconds]),
        np.zeros((n, 2)),
        event_ids=np.arange(first_id, first_id + n),
    )


def rows(batch: pa.RecordBatch, ts=beam.DoFn.TimestampParam, w=beam.DoFn.WindowParam):
    for i, v, p in zip(
        batch.column(mb.EVENT_ID).to_pylist(),
        batch.column(MODEL_VERSION).to_pylist(),
        batch.column("prediction").to_pylist(),
        strict=True,
    ):
        yield (i, v, p, w.start.micros // S, ts.micros == mb.min_event_time_us(batch))


def test_hot_swap_mid_stream_scores_each_row_once_with_its_windows_model(tmp_path):
    store = ModelStore(str(tmp_path / "models"))
    path2 = store.save(constant(2, 2))
    chunks = [
        (events([1, 2, 3], 0), 5),
        (events([4, 12], 3), 13),  # t=12 is in window [10, 20): model v1
        (events([14, 15], 5), 21),
        (events([22, 25], 7), 30),  # window [20, 30): model v2 (from the store)
    ]
    p = make_pipeline(streaming=True)
    src = replay(p, [(b, wm * S, []) for b, wm in chunks])
    window = WindowSpec("fixed", size_s=10.0)
    batches = (src.batches | EventTimeWindow(window)).batches
    updates = (
        p
        | "Updates"
        >> beam.Create(
            [
                bw.TimestampedValue(constant(1, 1), Timestamp(10)),
                bw.TimestampedValue(path2, Timestamp(20)),
            ]
        )
        | "UpdateWindows" >> beam.WindowInto(window.window_fn())
    )
    scored = batches | StreamingInference(constant(0, 0), device="cpu", updates=updates)
    expected = [(i, 0, 0, 0, True) for i in range(4)]
    expected += [(i, 1, 1, 10, True) for i in (4, 5, 6)]
    expected += [(i, 2, 2, 20, True) for i in (7, 8)]
    assert_that(scored | beam.ParDo(rows), equal_to(expected))
    p.run().wait_until_finish()


def test_a_bundle_the_lateness_gate_empties_does_not_stall_the_scorer():
    """An expired batch arriving alone: the gate sets all of its bundle aside, so the
    scorer with a windowed side input gets a bundle without elements. Beam's streaming
    DirectRunner cannot map "no window" onto the side input's windows and, unaided,
    hangs in a worker thread; the scorer's own side-input view handles it."""
    import threading

    chunks = [
        (events([1, 2], 0), 25),  # the watermark jumps past window [0, 10)
        (events([3], 2), 26),  # expired: its window ended at 10, no lateness allowed
        (events([31], 3), 40),
    ]
    p = make_pipeline(streaming=True)
    src = replay(p, [(b, wm * S, []) for b, wm in chunks])
    window = WindowSpec("fixed", size_s=10.0)
    gated = src.batches | EventTimeWindow(window)
    updates = (
        p
        | "Updates" >> beam.Create([bw.TimestampedValue(constant(1, 1), Timestamp(30))])
        | "UpdateWindows" >> beam.WindowInto(window.window_fn())
    )
    scored = gated.batches | StreamingInference(constant(0, 0), device="cpu", updates=updates)
    assert_that(
        scored | beam.ParDo(rows),
        equal_to([(0, 0, 0, 0, True), (1, 0, 0, 0, True), (3, 1, 1, 30, True)]),
    )
    assert_that(gated.dropped | beam.Map(lambda d: d["rows"]), equal_to([1]), label="Dropped")
    done: list[bool] = []
    runner = threading.Thread(
        target=lambda: done.append(p.run().wait_until_finish() is not None), daemon=True
    )
    runner.start()
    runner.join(timeout=120)
    assert done, "the pipeline stalled on a bundle without elements"


def test_metadata_updates_and_gathered_passes_keep_timestamps(tmp_path):
    store = ModelStore(str(tmp_path / "models"))
    meta = ModelMetadata(model_id=store.save(constant(3, 7)), model_name="v7")
    batches = [
        bw.TimestampedValue(events([t, t + 0.5], 2 * t), Timestamp(t)) for t in range(0, 40, 4)
    ]
    with make_pipeline(streaming=False) as p:
        updates = p | "Updates" >> beam.Create([meta])
        out = (
            p
            | "Batches" >> beam.Create(batches)
            | "Window" >> beam.WindowInto(bw.FixedWindows(8))
            | StreamingInference(constant(0, 0), device="cpu", updates=updates)
        )
        assert_that(
            out | beam.ParDo(rows),
            equal_to(
                [(2 * t + k, 7, 3, t // 8 * 8, True) for t in range(0, 40, 4) for k in (0, 1)]
            ),
        )


def test_sliding_windows_do_not_score_twice_without_side_input():
    batches = [bw.TimestampedValue(events([t], t), Timestamp(t)) for t in range(10)]
    with make_pipeline(streaming=False) as p:
        out = (
            p
            | beam.Create(batches)
            | beam.WindowInto(bw.SlidingWindows(10, 5))
            | StreamingInference(constant(1, 0), device="cpu")
            | beam.Map(
                lambda b, w=beam.DoFn.WindowParam: (
                    b.column("event_id")[0].as_py(),
                    w.start.micros // S,
                )
            )
        )
        # Each event keeps both of its sliding windows (one output element per window
        # view), but was scored once: the element is emitted with all its windows.
        expected = [(t, s) for t in range(10) for s in (t // 5 * 5 - 5, t // 5 * 5)]
        assert_that(out, equal_to(expected))


def test_works_inside_beams_runinference_with_model_updates(tmp_path):
    store = ModelStore(str(tmp_path / "models"))
    first = store.save(constant(1, 1))
    handler = TorchModelHandlerNumpy(model_path=first, device="cpu")
    examples = [np.full(2, i, np.float32) for i in range(20)]
    with make_pipeline(streaming=False) as p:
        out = (
            p
            | beam.Create(examples)
            | RunInference(handler)
            | beam.Map(lambda r: (r.model_id, r.inference["prediction"]))
        )
        assert_that(out, equal_to([("1", 1)] * 20))


def test_keyed_models_are_isolated_and_lru_bounded():
    def loader(model_key: str) -> ModelArtifact:
        k = int(model_key[-1])
        return constant(k, 10 + k)

    keys = ["tenant0", "tenant1", "tenant2", "tenant3"]
    batches = [
        mb.make_batch(
            [keys[(i + j) % 4] for j in range(8)],
            np.arange(8) * S,
            np.zeros((8, 2)),
            event_ids=np.arange(8 * i, 8 * i + 8),
        )
        for i in range(6)
    ]
    p = make_pipeline(streaming=False)
    out = (
        p
        | beam.Create(batches)
        | KeyedInference(loader, max_resident=2, device="cpu")
        | beam.FlatMap(
            lambda b: zip(
                b.column("key").to_pylist(),
                b.column(MODEL).to_pylist(),
                b.column("prediction").to_pylist(),
                b.column(MODEL_VERSION).to_pylist(),
                strict=True,
            )
        )
    )
    expected = [(k, k, int(k[-1]), 10 + int(k[-1])) for k in keys for _ in range(12)]
    assert_that(out, equal_to(expected))
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    # Only two models fit: the four keys of every batch force reloads and evictions.
    assert counters["model_loads"] > 4
    assert counters["model_evictions"] == counters["model_loads"] - 2


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="resident_versions must be > 0"):
        StreamingInference(constant(0, 0), resident_versions=0)
    with pytest.raises(ValueError, match="max_resident must be > 0"):
        KeyedInference(lambda k: constant(0, 0), max_resident=0)


def test_runinference_picks_up_model_store_updates(tmp_path):
    store = ModelStore(str(tmp_path / "models"))
    first = store.save(constant(1, 1))
    second = store.save(constant(2, 2))
    handler = TorchModelHandlerNumpy(model_path=first, device="cpu")
    examples = [np.full(2, i, np.float32) for i in range(10)]
    with make_pipeline(streaming=False) as p:
        updates = p | "Updates" >> beam.Create([ModelMetadata(model_id=second, model_name="v2")])
        out = (
            p
            | beam.Create(examples)
            | RunInference(handler, model_metadata_pcoll=updates)
            | beam.Map(lambda r: (r.model_id, r.inference["prediction"]))
        )
        assert_that(out, equal_to([("2", 2)] * 10))


def test_inference_metrics_are_reported():
    batches = [events([float(t)], t) for t in range(30)]
    p = make_pipeline(streaming=False)
    _ = p | beam.Create(batches) | StreamingInference(constant(1, 4), device="cpu")
    result = p.run()
    result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in metrics["counters"]}
    dists = {d.key.metric.name: d.committed for d in metrics["distributions"]}
    gauges = {g.key.metric.name: g.committed for g in metrics["gauges"]}
    assert counters["rows_scored"] == 30
    assert dists["batch_size"].sum == 30 and dists["batch_size"].max > 1  # gathered passes
    assert dists["batch_latency_ms"].count == dists["batch_size"].count
    assert dists["model_load_ms"].count >= 1
    assert gauges["model_version"].value == 4


def test_the_learned_batch_size_carries_across_bundles():
    """The streaming DirectRunner sets up a fresh DoFn copy for every bundle; the
    step's batch-size controller must not start again from its initial size."""
    from model.batching import AdaptiveBatchSize
    from model.process_cache import PROCESS_CACHE

    p = make_pipeline(streaming=True)
    items = [(events([float(t)], t), (t + 1) * S, []) for t in range(12)]
    src = replay(p, items, watermark_interval_s=4.0)  # 3 bundles of 4 one-row batches
    batching = AdaptiveBatchSize(target_latency_s=60.0, initial=1, step=1, max_size=64)
    step = StreamingInference(constant(1, 0), device="cpu", batching=batching)
    scored = src.batches | step | beam.Map(lambda b: b.num_rows)
    assert_that(scored, equal_to([1] * 12))
    p.run().wait_until_finish()
    # A bundle of at most four one-row batches, starting from size 1, grows it to 3 at
    # most (full passes of 1 and 2 rows); only a size carried over gets further.
    assert PROCESS_CACHE.get("batch_size", step._fn._token).size >= 4
