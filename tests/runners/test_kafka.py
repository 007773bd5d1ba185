"""The local Kafka broker: started and stopped by PID, on 127.0.0.1 only; topics fed
by the load generator and read back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.streams.synthetic import SyntheticConfig, generate
from model.streams.topics import read_keyed
from runners.kafka import (
    KafkaUnavailable,
    LocalBroker,
    create_topic,
    end_offsets,
    head,
    partitions_of,
    produce,
    rows_of_batches,
)
from runners.kafka.__main__ import main as cli
from runners.processes import pid_alive

pytestmark = pytest.mark.kafka


def _listening(port: int) -> set[str]:
    """The local addresses something listens on at ``port`` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(address)
    return found


def test_the_broker_listens_on_loopback_only(kafka_broker):
    pid = kafka_broker.pid()
    assert pid is not None and pid_alive(pid)
    for port in (kafka_broker.port, kafka_broker.controller_port):
        addresses = _listening(port)
        # 127.0.0.1, as IPv4 or as IPv4-mapped IPv6; never 0.0.0.0 or ::
        assert addresses and addresses <= {"0100007F", "0000000000000000FFFF00000100007F"}


def test_a_second_broker_on_a_taken_port_is_refused_with_the_port_named(kafka_broker, tmp_path):
    other = LocalBroker(tmp_path / "other", kafka_broker.port, kafka_broker.controller_port + 1)
    with pytest.raises(KafkaUnavailable, match=str(kafka_broker.port)):
        other.start()
    assert other.pid() is None


def test_produced_events_are_read_back_whole_from_every_partition(kafka_broker):
    bootstrap = kafka_broker.bootstrap
    assert create_topic(bootstrap, "produced", partitions=3)
    assert not create_topic(bootstrap, "produced", partitions=3)  # exists: said, not an error
    assert partitions_of(bootstrap, "produced") == [0, 1, 2]
    cfg = SyntheticConfig(num_events=3_000, num_keys=6)
    names = [f"x{i}" for i in range(cfg.num_features)]
    rows = rows_of_batches((c.batch for c in generate(cfg)), names)
    done = produce(bootstrap, "produced", rows, count=2_000, rate=50_000)
    assert done.events == 2_000  # the count bounds it
    assert sum(end_offsets(bootstrap, "produced").values()) == 2_000
    records = [json.loads(v) for v in head(bootstrap, "produced", records=5_000)]
    assert sorted(r["event_id"] for r in records) == sorted({r["event_id"] for r in records})
    assert len(records) == 2_000 and set(records[0]) >= {"timestamp", "key", "x0", "label"}


def test_the_command_line_creates_and_feeds_a_topic_from_a_csv(kafka_broker, capsys):
    csv = Path(__file__).parents[2] / "benchmarks" / "data" / "weather" / "weather.csv"
    args = ["--bootstrap", kafka_broker.bootstrap, "--topic", "weather", "--partitions", "2"]
    assert cli(["create-topic", *args]) == 0
    assert cli(["produce", *args, "--input", str(csv), "--label-column", "target",
                "--events", "500"]) == 0  # fmt: skip
    assert "produced 500 events to weather" in capsys.readouterr().out
    first = json.loads(head(kafka_broker.bootstrap, "weather", records=1)[0])
    assert first["timestamp"].startswith("1949-01-") and first["target"] in (0, 1)


def test_no_broker_is_a_clear_error(capsys):
    assert cli(["produce", "--bootstrap", "127.0.0.1:9", "--topic", "x", "--events", "1"]) == 1
    assert "no Kafka broker answers at 127.0.0.1:9" in capsys.readouterr().err


def test_stop_ends_the_process_by_pid_and_frees_its_ports(tmp_path):
    from runners.processes import free_port

    broker = LocalBroker(tmp_path / "own", free_port(), free_port())
    pid = broker.start()
    try:
        assert broker.status()["pid"] == pid
    finally:
        broker.stop()
    assert not pid_alive(pid) and broker.pid() is None
    assert not _listening(broker.port)
    pid = broker.start()  # restarts on the same data
    broker.stop()
    assert not pid_alive(pid)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runner", "checkpoint_ms"),
    [("PrismRunner", None), ("FlinkRunner", None), ("FlinkRunner", 1000)],
    ids=["prism", "flink", "flink-checkpointed"],
)
def test_a_live_read_gives_the_bounded_reads_predictions(
    kafka_broker, tmp_path, runner, checkpoint_ms
):
    # Prism and the embedded Flink (with checkpoints every second, too: the job runs
    # until drained once the read is over) read the topic live, until it has been idle
    # for two seconds; the DirectRunner reads it to its end offsets: the same
    # predictions, by the same model versions (a Beam window a window in both: --frame 1)
    from runners import flink, prism
    from tests.outputs import run_and_read

    try:
        prism.prism_binary() if runner == "PrismRunner" else flink.job_server()
    except (prism.PrismUnavailable, flink.FlinkUnavailable) as err:
        pytest.skip(str(err))
    csv = Path(__file__).parents[2] / "benchmarks" / "data" / "weather" / "weather.csv"
    topic = f"live-{runner.lower()}-{checkpoint_ms}"
    args = ["--bootstrap", kafka_broker.bootstrap, "--topic", topic]
    assert cli(["produce", *args, "--partitions", "2", "--input", str(csv),
                "--label-column", "target", "--events", "1500"]) == 0  # fmt: skip
    base = ["--source", "kafka", *args, "--label-column", "target", "--frame", "1"]
    bounded = run_and_read("DirectRunner", base, tmp_path / "direct")
    live = ["--runner", runner, "--kafka-until", "never", "--kafka-stop-idle", "2"]
    live += ["--sink-topic", f"{topic}-out"]  # and each prediction to Kafka, once
    settings = (
        {}
        if checkpoint_ms is None
        else {"flink": flink.FlinkSettings(checkpointing_interval_ms=checkpoint_ms)}
    )
    assert run_and_read(runner, [*base, *live], tmp_path / "live", **settings) == bounded
    assert len(bounded) == 1500
    sent = read_keyed(kafka_broker.bootstrap, f"{topic}-out").values()
    rows = [json.loads(v) for v in sent]
    assert sorted((r["event_id"], r["prediction"], r["model_version"]) for r in rows) == bounded
