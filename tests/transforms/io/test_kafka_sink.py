"""Predictions to Kafka: one transaction a bundle, each record keyed by its event."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pytest

from model import batch as mb
from model.streams.topics import read_committed
from runners.kafka import create_topic
from runners.kafka.__main__ import main as kafka_cli
from transforms.io.kafka_sink import _WriteKafkaDoFn, keyed_records

pytestmark = pytest.mark.usefixtures("kafka_broker")


def _batch(ids: range) -> object:
    n = len(ids)
    return mb.make_batch(["k"] * n, np.arange(n) * 10**6, np.zeros((n, 1)), event_ids=ids)


def test_rows_are_records_keyed_by_their_event():
    keys, values = keyed_records(_batch(range(5, 8)))
    assert keys == [b'["k", 5]', b'["k", 6]', b'["k", 7]']
    assert [json.loads(v)["event_id"] for v in values] == [5, 6, 7]
    assert json.loads(values[1])["event_time"] == "1970-01-01T00:00:01.000000Z"


def _bundle(writer: _WriteKafkaDoFn, ids: range, *, fails: bool = False) -> None:
    """One bundle, as a runner runs it; a failing one is torn down unfinished."""
    writer.setup()
    writer.start_bundle()
    list(writer.process(_batch(ids)))
    if fails:
        writer.teardown()
    else:
        writer.finish_bundle()


def test_a_failed_bundle_is_never_seen_and_a_replayed_one_is_seen_once(kafka_broker):
    bootstrap, topic = kafka_broker.bootstrap, f"sink-bundles-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, partitions=2)

    def writer() -> _WriteKafkaDoFn:
        return _WriteKafkaDoFn(bootstrap, topic, "rows", transaction_timeout_ms=60_000)

    _bundle(writer(), range(0, 100), fails=True)
    _bundle(writer(), range(100, 150))  # the runner's next bundle, on a fresh DoFn
    records = read_committed(bootstrap, topic, timeout_s=20)
    assert sorted(json.loads(k)[1] for k, _ in records) == list(range(100, 150))
    _bundle(writer(), range(100, 150))  # replayed after its commit: the same records
    records = read_committed(bootstrap, topic, timeout_s=20)
    assert len(records) == 100  # in the log twice: the same value under each key
    by_key: dict[bytes, set[bytes]] = {}
    for key, value in records:
        by_key.setdefault(key, set()).add(value)
    assert len(by_key) == 50 and all(len(v) == 1 for v in by_key.values())


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
    records = read_committed(bootstrap, f"sink-out-{name}")
    sent = {json.loads(k)[1]: json.loads(v) for k, v in records}
    table = read_parquet_dir(f"{out}/predictions")
    assert table is not None and len(records) == len(sent) == table.num_rows == 2000
    for row in table.to_pylist()[:50]:
        record = sent[row["event_id"]]
        assert record["prediction"] == row["prediction"]
        assert record["model_version"] == row["model_version"]
