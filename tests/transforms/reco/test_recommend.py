"""Recommend in Beam: prequential predictions as the plain model gives them, on
streaming and bounded runs; the model rebuilt from state goes on exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from model.process_cache import PROCESS_CACHE
from model.reco.events import InteractionFormat, chunks
from model.reco.mf import MFConfig, StreamingMF
from model.streams.interactions import InteractionsConfig, interactions
from transforms.reco.recommend import _RecommendWorker
from transforms.reco.source import InteractionsSource


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return pa.table(interactions(InteractionsConfig(events=3000, users=100, items=60, seed=2)))


def _batches(table: pa.Table) -> list[pa.RecordBatch]:
    return [c.batch for c in chunks(table, InteractionFormat(chunk_rows=500)) if c.batch]


def test_the_worker_predicts_what_the_plain_model_predicts(table) -> None:
    worker = _RecommendWorker(MFConfig(seed=0), "test-plain")
    worker.restore(None)
    got = np.concatenate([
        worker.apply(b)[0].column("prediction").to_numpy() for b in _batches(table)
    ])  # fmt: skip
    plain = StreamingMF(MFConfig(seed=0)).predict_learn(
        table.column("user"), table.column("item"), table.column("rating").to_numpy()
    )
    np.testing.assert_allclose(got, plain, atol=1e-6)


def test_a_model_rebuilt_from_its_state_goes_on_exactly(table) -> None:
    batches = _batches(table)
    one = _RecommendWorker(MFConfig(seed=0), "test-one")
    one.restore(None)
    state = None
    for b in batches[:3]:
        one.apply(b)
        state = one.snapshot()
    expected = [one.apply(b)[0] for b in batches[3:]]
    PROCESS_CACHE.drop("learner", lambda key: key[0] == "test-two")
    two = _RecommendWorker(MFConfig(seed=0), "test-two")  # another process: only the state
    two.restore(state)
    got = [two.apply(b)[0] for b in batches[3:]]
    for a, b in zip(expected, got, strict=True):
        assert a.equals(b)


def test_model_versions_count_the_ratings_learnt_before(table) -> None:
    worker = _RecommendWorker(MFConfig(seed=0), "test-versions")
    worker.restore(None)
    versions = np.concatenate([
        worker.apply(b)[0].column("model_version").to_numpy() for b in _batches(table)
    ])  # fmt: skip
    assert versions.tolist() == list(range(3000))


@pytest.mark.parametrize("streaming", [True, False])
def test_source_and_step_in_a_pipeline(streaming, beam_patches, tmp_path) -> None:
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from runners.direct import direct_options, direct_runner
    from transforms.reco import Recommend

    path = tmp_path / "ratings.csv"
    path.write_text(
        "timestamp,user,item,rating\n"
        "2024-01-01 00:00:00,ann,a,4\n"
        "2024-01-01 00:00:01,bob,a,5\n"
        "not a time,bob,b,3\n"
        "2024-01-01 00:00:03,,b,3\n"
        "2024-01-01 00:00:04,ann,b,nan\n"
        "2024-01-01 00:00:05,ann,c,\n"
    )
    p = beam.Pipeline(runner=direct_runner(streaming=streaming),
                      options=direct_options(streaming=streaming))  # fmt: skip
    source = p | InteractionsSource([str(path)], streaming=streaming)
    rows = source.batches | Recommend(MFConfig(seed=0))
    ids = rows | beam.FlatMap(lambda b: b.column("event_id").to_pylist())
    reasons = source.dead_letter | beam.Map(lambda d: d.reason.split(":")[0])
    assert_that(ids, equal_to([0, 1, 5]), label="Rows")
    assert_that(reasons, equal_to(["unreadable timestamp", "empty user",
                                   "rating is not a finite number"]), label="Dead")  # fmt: skip
    p.run().wait_until_finish()
