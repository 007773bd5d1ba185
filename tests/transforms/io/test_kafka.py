"""The Kafka source: every record of every partition once, its watermark, bad records
set aside with partition and offset, and the command line's Kafka runs."""

from __future__ import annotations

import json
import os
import uuid

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.io.restriction_trackers import OffsetRange

from model import batch as mb
from model.streams.records import OFFSET_BITS, RecordFormat
from pipelines import main
from runners.direct import run
from runners.kafka import create_topic, end_offsets, produce
from tests.collect import Collect, take
from tests.conftest import make_pipeline
from transforms.io import read_jsonl_dir, read_parquet_dir
from transforms.io.kafka import NEVER, KafkaRead, KafkaSource, _PartitionTracker

pytestmark = pytest.mark.kafka
S = 1_000_000
FMT = RecordFormat(features=("a", "b"), label_column="y")
WEATHER = os.path.join(os.path.dirname(__file__), "../../../benchmarks/data/weather/weather.csv")


def _topic(broker, partitions: int, events: list[dict], bad: dict[int, bytes] | None = None):
    """A fresh topic holding ``events`` (each to the partition of its key), and raw
    ``bad`` values after them to the given partitions."""
    from confluent_kafka import Producer

    name = f"t-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, name, partitions)
    produce(broker.bootstrap, name, iter(events))
    _BAD_AT[name] = end_offsets(broker.bootstrap, name)  # where the bad ones go
    if bad:
        producer = Producer({"bootstrap.servers": broker.bootstrap})
        for partition, value in bad.items():
            producer.produce(name, value=value, partition=partition)
        producer.flush(30)
    return name


_BAD_AT: dict[str, dict[int, int]] = {}


def _events(n: int, keys: int = 3) -> list[dict]:
    return [
        {"timestamp": i * S, "key": f"k{i % keys}", "event_id": i, "a": i / 10, "b": 1.0,
         "y": i % 2}
        for i in range(n)
    ]  # fmt: skip


def _read(broker, topic: str, fmt: RecordFormat = FMT, **kwargs):
    p = make_pipeline(streaming=False)
    out = p | KafkaSource(KafkaRead(broker.bootstrap, topic, fmt, **kwargs))
    _ = out.batches | "Batches" >> beam.ParDo(Collect("batches"))
    _ = out.dead_letter | "Dead" >> beam.ParDo(Collect("dead"))
    run(p).wait_until_finish()
    return take("batches"), take("dead")


def test_every_record_of_every_partition_is_read_once(kafka_broker):
    topic = _topic(kafka_broker, 3, _events(3_000))
    batches, dead = _read(kafka_broker, topic, max_records=500)
    ids = [i for b in batches for i in b.column(mb.EVENT_ID).to_pylist()]
    assert sorted(ids) == list(range(3_000)) and not dead
    assert all(b.num_rows <= 500 for b in batches)  # polls of at most max_records
    # a key's events come in their order (one partition, read in offset order)
    for key in ("k0", "k1", "k2"):
        seen = [i for b in batches for k, i in zip(b.column(mb.KEY).to_pylist(),
                b.column(mb.EVENT_ID).to_pylist(), strict=True) if k == key]  # fmt: skip
        assert seen == sorted(seen)


def test_bad_records_are_dead_letters_with_partition_and_offset(kafka_broker):
    events = _events(200, keys=1)
    bad = {0: b"{not json", 1: json.dumps({"timestamp": 1, "a": "x", "b": 1, "y": 0}).encode()}
    topic = _topic(kafka_broker, 2, events, bad)
    batches, dead = _read(kafka_broker, topic)
    assert sum(b.num_rows for b in batches) == 200  # in = out + rejected
    by_partition = {d["partition"]: d for d in dead}
    assert sorted(by_partition) == [0, 1] and all(d["rows"] == 1 for d in dead)
    assert by_partition[0]["reason"] == "not a JSON object"
    assert "field 'a' is not a number" in by_partition[1]["reason"]
    assert by_partition[0]["raw"] == "{not json" and by_partition[0]["source"] == f"kafka:{topic}"
    assert {p: d["offset"] for p, d in by_partition.items()} == _BAD_AT[topic]


def test_records_without_an_event_id_get_one_from_partition_and_offset(kafka_broker):
    events = [{k: v for k, v in e.items() if k != "event_id"} for e in _events(10, keys=1)]
    topic = _topic(kafka_broker, 1, events)
    batches, _ = _read(kafka_broker, topic)
    ids = sorted(i for b in batches for i in b.column(mb.EVENT_ID).to_pylist())
    assert ids == [(0 << OFFSET_BITS) | offset for offset in range(10)]


def test_each_batch_carries_the_watermark_before_it(kafka_broker):
    topic = _topic(kafka_broker, 1, _events(1_000, keys=1))
    batches, _ = _read(kafka_broker, topic, max_records=100, max_out_of_order_s=5.0)
    batches.sort(key=lambda b: int(mb.event_times_us(b).min()))
    marks = [mb.watermark_of(b) for b in batches]
    # the newest event time before the batch, less the bound on out-of-orderness
    expected = [int(mb.event_times_us(b).max()) - 5 * S for b in batches[:-1]]
    assert marks[1:] == expected and marks[0] < 0


def test_a_partition_reader_checkpoints_but_never_halves_its_range():
    tracker = _PartitionTracker(OffsetRange(10, NEVER))
    assert not tracker.is_bounded() and _PartitionTracker(OffsetRange(0, 5)).is_bounded()
    assert tracker.try_claim(12)
    assert tracker.try_split(0.5) is None  # the rest of the range stays whole
    primary, residual = tracker.try_split(0)  # a checkpoint: after what was claimed
    assert (primary.start, primary.stop, residual.start) == (10, 13, 13)


def test_classify_reads_a_topic_as_it_reads_the_file(kafka_broker, tmp_path, capsys):
    topic = f"weather-{uuid.uuid4().hex[:6]}"
    from runners.kafka.__main__ import main as kafka_cli

    args = ["--bootstrap", kafka_broker.bootstrap, "--topic", topic]
    assert kafka_cli(["produce", *args, "--input", WEATHER, "--label-column", "target",
                      "--events", "3000"]) == 0  # fmt: skip
    capsys.readouterr()
    runs = {}
    for name, source in (
        ("kafka", ["--source", "kafka", *args]),
        ("csv", ["--source", "csv", "--input", str(tmp_path / "head.csv")]),
    ):
        if name == "csv":
            with open(WEATHER, encoding="utf-8") as f:
                (tmp_path / "head.csv").write_text("".join(f.readlines()[:3001]))
        out = str(tmp_path / name)
        argv = [*source, "--label-column", "target", "--output", out, "--json"]
        assert main.main(argv) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert summary["events_in"] == 3_000 and summary["balanced"]
        runs[name] = read_parquet_dir(os.path.join(out, "predictions"))
    kafka, csv = (runs[k].sort_by("event_time") for k in ("kafka", "csv"))
    np.testing.assert_array_equal(kafka.column("prediction"), csv.column("prediction"))
    assert read_jsonl_dir(str(tmp_path / "kafka" / "dead_letter")) == []


def test_a_live_read_needs_a_runner_that_can_run_it(kafka_broker, tmp_path, capsys):
    topic = _topic(kafka_broker, 1, _events(50, keys=1))
    argv = ["--source", "kafka", "--topic", topic, "--bootstrap", kafka_broker.bootstrap,
            "--label-column", "y", "--output", str(tmp_path / "o"),
            "--kafka-until", "never"]  # fmt: skip
    assert main.main(argv) == main.EXIT_USAGE
    assert "PrismRunner or FlinkRunner" in capsys.readouterr().err


class _Message:
    def __init__(self, offset: int) -> None:
        self._offset = offset

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return json.dumps({"timestamp": self._offset, "a": 1.0, "b": 2.0, "y": 0}).encode()


def test_a_checkpoint_between_the_claims_leaves_the_rest_to_the_residual():
    from apache_beam.io.watermark_estimators import ManualWatermarkEstimator

    from transforms.io.kafka import _ReadPartitionDoFn

    fn = _ReadPartitionDoFn(KafkaRead("127.0.0.1:9", "t", FMT))
    fn.setup()
    tracker = _PartitionTracker(OffsetRange(0, 100))
    original = tracker.try_claim
    calls = []

    def claim(position):  # a runner's checkpoint lands right after the first claim
        calls.append(position)
        ok = original(position)
        if len(calls) == 1:
            tracker.try_split(0)
        return ok

    tracker.try_claim = claim
    claimed = fn._claimed(tracker, ManualWatermarkEstimator(None), "t", 0,
                          [_Message(o) for o in range(10)])  # fmt: skip
    assert claimed is not None
    outputs, position, whole = claimed
    assert not whole and position == 1 and calls == [0, 9]  # nothing claimed after
    (batch,) = [o.value for o in outputs]
    assert batch.column(mb.EVENT_ID).to_pylist() == [0]  # the rest is the residual's
    assert tracker.current_restriction() == OffsetRange(0, 1)


class _OneAtATime:
    """A consumer whose records come one a call (a producer the reader keeps up with)."""

    def __init__(self, offsets: list[int]) -> None:
        self._left = list(offsets)
        self._calls = 0

    def consume(self, count: int, timeout: float) -> list[object]:
        assert count > 0
        self._calls += 1
        assert self._calls < 1_000, "the poll never stopped lingering"
        if not self._left:
            import time

            time.sleep(min(timeout, 0.01))
            return []
        offset = self._left.pop(0)
        return [type("M", (), {"offset": lambda _: offset, "error": lambda _: None})()]


@pytest.mark.parametrize(
    ("offsets", "max_records", "stop", "polled"),
    [
        (list(range(10)), 4, NEVER, 4),  # batched up to max_records, not one a poll
        ([0, 1, 2], 100, NEVER, 3),  # what lingered, once linger_s has passed
        (list(range(10)), 100, 3, 3),  # the end of the range: no lingering past it
    ],
)
def test_a_poll_gathers_the_records_that_trickle_in(offsets, max_records, stop, polled):
    from transforms.io.kafka import _ReadPartitionDoFn

    read = KafkaRead("127.0.0.1:9", "t", FMT, max_records=max_records, linger_s=0.05)
    records, end = _ReadPartitionDoFn(read)._poll(_OneAtATime(offsets), stop)
    assert [m.offset() for m in records] == offsets[:polled] and end is None


def test_a_read_is_over_once_every_partition_ended_after_the_last_restore(tmp_path):
    from transforms.io.kafka import _all_done, _leave_done

    done = str(tmp_path / "done")
    names = ["t-0.done", "t-1.done"]
    _leave_done(done, names[0])
    assert not _all_done(done, names)  # one partition still reads
    _leave_done(done, names[1])
    assert _all_done(done, names)
    # what the partitions said before a restore (whose reads go on) does not count
    assert not _all_done(done, names, since=os.stat(os.path.join(done, names[1])).st_mtime)
    _leave_done(str(tmp_path / "not-a-folder" / "x"), "y")  # no folder there: no error
