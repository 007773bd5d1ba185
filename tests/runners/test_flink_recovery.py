"""A checkpointed job on a standalone Flink cluster, reading a Kafka topic that a
producer keeps filling, survives its TaskManager killed twice: nothing lost, nothing
repeated, the same model as a run without faults."""

from __future__ import annotations

import collections
import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from model.streams.csv_parse import CsvFormat, feature_names, parse_lines
from model.streams.topics import end_offsets, read_committed
from pipelines.summary import predictions_by_event
from runners import flink
from runners.flink import LocalCluster
from runners.flink.__main__ import main as flink_cli
from runners.flink.rest import _get
from runners.kafka.__main__ import main as kafka_cli
from runners.kafka.client import produce, rows_of_batches
from runners.processes import free_port, pid_alive, terminate
from tests.outputs import run_and_read
from transforms.io import ModelStore

ROOT = Path(__file__).parents[2]
CSV = ROOT / "benchmarks" / "data" / "weather" / "weather.csv"
EVENTS, HEAD, RATE = 12_000, 500, 150.0  # about 77 s of production at that rate


def _feed(bootstrap: str, topic: str, first: int = HEAD, last: int = EVENTS) -> None:
    """The file's events ``first`` to ``last`` into ``topic``, at RATE a second."""
    fmt = CsvFormat(label_column="target")
    names = feature_names(str(CSV), fmt)
    with open(CSV, encoding="utf-8") as f:
        batches = (c.batch for c in parse_lines(f, fmt, str(CSV)) if c.batch is not None)
        rows = rows_of_batches(batches, names, label_field="target")
        for _ in range(first):
            next(rows)
        produce(bootstrap, topic, rows, rate=RATE, count=last - first)


@dataclass
class _Stream:
    """A cluster, a topic with its first records, and the command line of a job that
    reads it live, checkpointed, into ``out`` (and the sink topic ``<topic>-out``)."""

    cluster: LocalCluster
    bootstrap: str
    topic: str
    out: Path

    @property
    def source(self) -> list[str]:
        return ["--source", "kafka", "--bootstrap", self.bootstrap, "--topic", self.topic,
                "--label-column", "target", "--frame", "1"]  # fmt: skip

    def job(self, *extra: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "pipelines/main.py", "--runner", "FlinkRunner",
                "--flink-master", self.cluster.master, "--checkpointing-interval", "1000",
                *self.source, "--kafka-until", "never", "--kafka-stop-idle", "10",
                "--sink-topic", f"{self.topic}-out", "--output", str(self.out), "--quiet",
                "--json", *extra]  # fmt: skip
        # stderr to a file: the SDK harness logs each restore at length, and a pipe no
        # one reads while the job runs would fill and stall it
        log = open(self.out.parent / "job.err", "wb")  # noqa: SIM115 - the job's
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)

    def state(self) -> tuple[str, int]:
        """The newest job's state and completed checkpoints."""
        jobs = (_get(self.cluster.rest_url + "/jobs/overview") or {}).get("jobs", [])
        if not jobs:
            return "", 0
        job = max(jobs, key=lambda j: j["start-time"])
        url = f"{self.cluster.rest_url}/jobs/{job['jid']}/checkpoints"
        return job["state"], int(((_get(url) or {}).get("counts") or {}).get("completed", 0))

    def wait_mid_stream(self, job: subprocess.Popen[bytes], share: float) -> None:
        """Until the job runs, has completed another checkpoint, and ``share`` of the
        events are in the topic."""
        checkpoints = self.state()[1]
        deadline = time.monotonic() + 240
        while job.poll() is None and time.monotonic() < deadline:
            state, done = self.state()
            produced = sum(end_offsets(self.bootstrap, self.topic).values())
            if state == "RUNNING" and done > checkpoints and produced >= share * EVENTS:
                print(f"{time.strftime('%X')} {share:.0%}: {produced} produced, {done} checkpoints")
                return
            time.sleep(0.2)
        raise AssertionError(f"the job ended or stalled before {share:.0%} of the stream")

    def check_once_and_as_without_faults(self, tmp_path: Path) -> None:
        """Every event in the files once, as a run without faults scores it, and on the
        sink topic; model versions 1..N, the last one's bytes as without faults."""
        faulty = predictions_by_event(str(self.out), once=True)  # replays: repeated whole
        counts = collections.Counter(event for event, _, _ in faulty)
        assert len(counts) == EVENTS and max(counts.values()) == 1
        reference = run_and_read("DirectRunner", self.source, tmp_path / "reference")
        assert faulty == reference
        records = read_committed(self.bootstrap, f"{self.topic}-out")
        values: dict[bytes, set[bytes]] = collections.defaultdict(set)
        for key, value in records:
            values[key].add(value)
        assert all(len(v) == 1 for v in values.values())  # a key repeated: the same value
        sent = {json.loads(k)[1]: json.loads(v) for k, v in records}
        assert (
            sorted((i, r["prediction"], r["model_version"]) for i, r in sent.items()) == reference
        )
        versions = ModelStore(str(self.out / "models")).versions()
        assert versions == list(range(1, len(versions) + 1))
        assert versions == ModelStore(str(tmp_path / "reference" / "models")).versions()
        last = f"model-{versions[-1]:010d}.pt"
        reference_model = tmp_path / "reference" / "models" / last
        assert (self.out / "models" / last).read_bytes() == reference_model.read_bytes()


@pytest.fixture
def stream(kafka_broker, tmp_path, request) -> Iterator[_Stream]:
    try:
        flink.job_server()
        cluster = LocalCluster(tmp_path / "flink", rest_port=free_port())
        cluster.start()
    except flink.FlinkUnavailable as err:
        pytest.skip(str(err))
    topic = request.node.name.split("[")[0][-40:]
    try:
        assert kafka_cli(["produce", "--bootstrap", kafka_broker.bootstrap, "--topic", topic,
                          "--partitions", "2", "--input", str(CSV), "--label-column", "target",
                          "--events", str(HEAD)]) == 0  # fmt: skip
        yield _Stream(cluster, kafka_broker.bootstrap, topic, tmp_path / "out")
    finally:
        cluster.stop()


def _summary(stdout: bytes) -> dict:
    return dict(json.loads(stdout.decode().strip().splitlines()[-1]))


@pytest.mark.slow
def test_a_killed_taskmanager_loses_and_repeats_nothing(stream, tmp_path):
    job = stream.job()
    feeder = threading.Thread(target=_feed, args=(stream.bootstrap, stream.topic))
    feeder.start()
    try:
        for share in (0.4, 0.75):  # mid-stream, at two points, each after checkpoints
            stream.wait_mid_stream(job, share)
            assert feeder.is_alive()  # the producer is still at it
            killed = stream.cluster.kill("taskmanager")
            deadline = time.monotonic() + 30
            while pid_alive(killed) and time.monotonic() < deadline:
                time.sleep(0.05)
            stream.cluster.start_taskmanager()
        stdout, _ = job.communicate(timeout=420)
    finally:
        feeder.join()
        if job.poll() is None:
            terminate([job.pid], 10)
    errors = (tmp_path / "job.err").read_text(errors="replace")
    summary = _summary(stdout) if stdout.strip() else {}
    shown = {k: v for k, v in summary.items() if k != "windows"}
    assert job.returncode == 0, f"{shown}\n{errors[-2000:]}"
    # Flink restored the job from its checkpoints, once a kill
    assert summary["flink"]["restored"] >= 2
    assert summary["balanced"] and summary["events_in"] == EVENTS
    assert any(n.startswith("events in: counted in the input") for n in summary["notes"])
    stream.check_once_and_as_without_faults(tmp_path)


@pytest.mark.slow
def test_a_job_stopped_with_a_savepoint_resumes_where_it_stopped(stream, tmp_path):
    # stopped mid-stream (python -m runners.flink savepoint), then resumed from its
    # savepoint into the same output folder while the producer goes on: together, each
    # event once and the model of a run without a stop; the resumed run's summary
    # counts the whole stream
    job = stream.job()
    feeder = threading.Thread(target=_feed, args=(stream.bootstrap, stream.topic))
    feeder.start()
    resumed = None
    try:
        stream.wait_mid_stream(job, 0.4)
        saved = tmp_path / "savepoints"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = flink_cli(["savepoint", "--master", stream.cluster.master, "--dir", str(saved)])
        assert code == 0
        assert feeder.is_alive()  # stopped mid-stream: the stream goes on
        path = printed.getvalue().strip()
        stdout, _ = job.communicate(timeout=120)
        assert job.returncode == 0  # stopped, not failed
        stopped = _summary(stdout)
        assert Path(stopped["flink"]["stopped_with"].removeprefix("file:")) == Path(
            path.removeprefix("file:")
        )
        assert any("--savepoint" in n for n in stopped["notes"])
        resumed = stream.job("--savepoint", path)
        stdout, _ = resumed.communicate(timeout=420)
    finally:
        feeder.join()
        for process in (job, resumed):
            if process is not None and process.poll() is None:
                terminate([process.pid], 10)
    errors = (tmp_path / "job.err").read_text(errors="replace")
    assert resumed.returncode == 0, errors[-2000:]
    summary = _summary(stdout)
    assert summary["flink"]["restored"] >= 1
    assert summary["balanced"] and summary["events_in"] == EVENTS
    stream.check_once_and_as_without_faults(tmp_path)
