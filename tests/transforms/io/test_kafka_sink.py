"""Predictions to Kafka: one transaction a bundle, each record keyed by its event."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from model import batch as mb
from model.streams.topics import read_keyed
from runners.kafka import create_topic
from runners.kafka.__main__ import main as kafka_cli
from transforms.io.kafka_sink import _WriteKafkaDoFn, keyed_records

pytestmark = pytest.mark.usefixtures("kafka_broker")


def _batch(ids: range) -> object:
    n = len(ids)
    return mb.make_batch(["k"] * n, np.arange(n) * 10**6, np.zeros((n, 1)), event_ids=ids)


def test_rows_are_records_keyed_by_their_event():
    keys, values = keyed_records(_batch(range(5, 8)))
    assert keys == [b"5", b"6", b"7"]
    assert [json.loads(v)["event_id"] for v in values] == [5, 6, 7]
    assert json.loads(values[1])["event_time"] == "1970-01-01T00:00:01.000000Z"


def test_a_failed_bundle_is_never_seen_and_a_replayed_one_is_seen_once(kafka_broker):
    bootstrap, topic = kafka_broker.bootstrap, f"sink-bundles-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=2)
    writer = _WriteKafkaDoFn(bootstrap, topic, "rows", transaction_timeout_ms=10_000)
    writer.setup()
    try:
        writer.start_bundle()  # a bundle that fails before it finishes
        list(writer.process(_batch(range(0, 100))))
        writer.start_bundle()  # the runner's next bundle: the failed one is aborted
        list(writer.process(_batch(range(100, 150))))
        writer.finish_bundle()
        assert set(read_keyed(bootstrap, topic)) == {str(i).encode() for i in range(100, 150)}
        # the same bundle again (replayed after its commit): the same values by key
        writer.start_bundle()
        list(writer.process(_batch(range(100, 150))))
        writer.finish_bundle()
        assert len(read_keyed(bootstrap, topic)) == 50
    finally:
        writer.teardown()


def test_the_command_line_sends_every_prediction_to_the_sink_topic(kafka_broker, tmp_path):
    from pipelines import main
    from transforms.io import read_parquet_dir

    bootstrap = kafka_broker.bootstrap
    csv = Path(__file__).parents[3] / "benchmarks" / "data" / "weather" / "weather.csv"
    name = uuid.uuid4().hex[:8]
    args = ["--bootstrap", bootstrap, "--topic", f"sink-in-{name}"]
    assert kafka_cli(["produce", *args, "--partitions", "2", "--input", str(csv),
                      "--label-column", "target", "--events", "2000"]) == 0  # fmt: skip
    out = str(tmp_path / "out")
    argv = [
        "--source",
        "kafka",
        *args,
        "--label-column",
        "target",
        "--sink-topic",
        f"sink-out-{name}",
    ]
    assert main.main([*argv, "--output", out, "--quiet"]) == 0
    sent = {int(k): json.loads(v) for k, v in read_keyed(bootstrap, f"sink-out-{name}").items()}
    table = read_parquet_dir(f"{out}/predictions")
    assert table is not None and len(sent) == table.num_rows == 2000
    for row in table.to_pylist()[:50]:
        record = sent[row["event_id"]]
        assert record["prediction"] == row["prediction"]
        assert record["model_version"] == row["model_version"]
