"""A checkpointed job on a standalone Flink cluster, reading a Kafka topic that a
producer keeps filling, survives its TaskManager killed twice: nothing lost, nothing
repeated, the same model as a run without faults."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model.streams.csv_parse import CsvFormat, feature_names, parse_lines
from model.streams.topics import end_offsets, read_committed
from pipelines.summary import predictions_by_event
from runners import flink
from runners.flink import LocalCluster
from runners.flink.rest import _get
from runners.kafka.__main__ import main as kafka_cli
from runners.kafka.client import produce, rows_of_batches
from runners.processes import pid_alive, terminate
from tests.conftest import free_port
from tests.outputs import run_and_read
from transforms.io import ModelStore

ROOT = Path(__file__).parents[2]
CSV = ROOT / "benchmarks" / "data" / "weather" / "weather.csv"
EVENTS, HEAD, RATE = 12_000, 500, 250.0  # about 45 s of production at that rate


def _feed(bootstrap: str, topic: str) -> None:
    """The file's events after the first HEAD, into ``topic`` at RATE a second."""
    fmt = CsvFormat(label_column="target")
    names = feature_names(str(CSV), fmt)
    with open(CSV, encoding="utf-8") as f:
        batches = (c.batch for c in parse_lines(f, fmt, str(CSV)) if c.batch is not None)
        rows = rows_of_batches(batches, names, label_field="target")
        for _ in range(HEAD):
            next(rows)
        produce(bootstrap, topic, rows, rate=RATE, count=EVENTS - HEAD)


def _job(cluster: LocalCluster) -> tuple[str, int, int]:
    """The newest job's state, completed checkpoints and restores."""
    jobs = (_get(cluster.rest_url + "/jobs/overview") or {}).get("jobs", [])
    if not jobs:
        return "", 0, 0
    job = max(jobs, key=lambda j: j["start-time"])
    counts = (_get(f"{cluster.rest_url}/jobs/{job['jid']}/checkpoints") or {}).get("counts", {})
    return job["state"], int(counts.get("completed", 0)), int(counts.get("restored", 0))


@pytest.mark.slow
def test_a_killed_taskmanager_loses_and_repeats_nothing(kafka_broker, tmp_path):
    try:
        flink.job_server()
        cluster = LocalCluster(tmp_path / "flink", rest_port=free_port())
        cluster.start()
    except flink.FlinkUnavailable as err:
        pytest.skip(str(err))
    bootstrap, topic = kafka_broker.bootstrap, "recovery"
    source = ["--source", "kafka", "--bootstrap", bootstrap, "--topic", topic]
    source += ["--label-column", "target", "--frame", "1"]
    job = None
    try:
        # the first records (the command line reads the stream's format from them)
        assert kafka_cli(["produce", "--bootstrap", bootstrap, "--topic", topic,
                          "--partitions", "2", "--input", str(CSV), "--label-column", "target",
                          "--events", str(HEAD)]) == 0  # fmt: skip
        out = tmp_path / "out"
        argv = [sys.executable, "pipelines/main.py", "--runner", "FlinkRunner",
                "--flink-master", cluster.master, "--checkpointing-interval", "1000", *source,
                "--kafka-until", "never", "--kafka-stop-idle", "10", "--sink-topic",
                f"{topic}-out", "--output", str(out), "--quiet", "--json"]  # fmt: skip
        job = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        feeder = threading.Thread(target=_feed, args=(bootstrap, topic))
        feeder.start()
        kills = []
        for share in (0.5, 0.9):  # mid-stream, at two points, each after checkpoints
            checkpoints = _job(cluster)[1]
            deadline = time.monotonic() + 240
            while job.poll() is None and time.monotonic() < deadline:
                state, done, _ = _job(cluster)
                produced = sum(end_offsets(bootstrap, topic).values())
                if state == "RUNNING" and done >= checkpoints + 2 and produced >= share * EVENTS:
                    break
                time.sleep(0.2)
            assert job.poll() is None, "the job ended before the TaskManager was killed"
            killed = cluster.kill("taskmanager")
            kills.append(killed)
            while pid_alive(killed):
                time.sleep(0.05)
            cluster.start_taskmanager()
        feeder.join()
        stdout, stderr = job.communicate(timeout=420)
        assert job.returncode == 0, stderr.decode()[-3000:]
    finally:
        if job is not None and job.poll() is None:
            terminate([job.pid], 10)
        cluster.stop()
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    # Flink restored the job from its checkpoints, once a kill
    assert summary["flink"]["restarts"] >= 2 and summary["flink"]["restored"] >= 2
    assert summary["balanced"] and summary["events_in"] == EVENTS
    # every event once in the files, and as a run without faults scores it
    faulty = predictions_by_event(str(out))
    counts = collections.Counter(event for event, _, _ in faulty)
    assert len(counts) == EVENTS and max(counts.values()) == 1
    reference = run_and_read("DirectRunner", source, tmp_path / "reference")
    assert faulty == reference
    # the sink topic: the last value of each key is each prediction, once
    sent = {json.loads(k)[1]: json.loads(v) for k, v in read_committed(bootstrap, f"{topic}-out")}
    assert sorted((i, r["prediction"], r["model_version"]) for i, r in sent.items()) == reference
    # the model versions: one sequence without gaps or repeats, the last one the same
    versions = ModelStore(str(out / "models")).versions()
    assert versions == list(range(1, len(versions) + 1))
    assert versions == ModelStore(str(tmp_path / "reference" / "models")).versions()
    last = f"model-{versions[-1]:010d}.pt"
    assert (out / "models" / last).read_bytes() == (
        tmp_path / "reference/models" / last
    ).read_bytes()
