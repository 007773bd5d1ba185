"""A live stream: a producer at a fixed rate into Kafka, the pipelines reading it on
Flink and on Prism; events/s, end-to-end latency, checkpoints, recovery, one run.

Each variant is ``pipelines/main.py`` in a process of its own, reading a fresh topic
(two partitions) live (``--kafka-until never``) and sending every prediction to a sink
topic (``--sink-topic``, one transaction a bundle), as a deployment would:

- ``flink_p1`` / ``flink_p2``: a standalone Flink cluster on this machine
  (:class:`runners.flink.LocalCluster`), checkpoints every second, parallelism 1 or 2;
- ``prism``: Beam's local portable runner (Prism);
- ``flink_p2_kill_cold`` (score): as ``flink_p2``, with its TaskManager killed by PID
  half way through and a new one started: the restart waits for the new one;
- ``flink_p2_kill`` (score): the same with a second TaskManager (spare slots, Flink's
  way to fast failover; the job's slots spread over both): a TaskManager running
  tasks is killed, the restart takes the survivor's free slots at once, and the new
  one becomes the spare.

A variant first gets a warm-up (its first 2,048 events at once, for the command line
to tell the stream's schema and time scale from, then 500 a second until half of them
have come out; the rest of ``--warmup`` is skipped), then ``--rate`` events a second
for ``--seconds`` (pre-encoded JSON records of the synthetic stream, sent every 5 ms),
then 500 a second again until every paced event is out, as in a stream that goes on.
Event time moves as the producer's clock does (events ``1 / rate`` s apart while it
sends at ``rate``). A consumer (``read_committed``) notes when each prediction becomes
visible on the sink topic:

- ``events_per_s``: the paced events that came out, over the time from the first of
  them out to the last (the rate the pipeline sustained: ``rate`` when it kept up,
  its own pace when it fell behind);
- ``latency_p50_s`` / ``latency_p99_s``: sent -> visible on the sink topic, per event;
- ``checkpoint_ms_last`` / ``checkpoint_ms_max``: Flink's own figures (REST API);
- ``job_running_again_s``: from the kill until every task of the restarted job runs
  (Flink's own times); ``recovery_s``: to the restored job's first prediction out
  after that; ``caught_up_s``: to the first prediction out of an event sent after
  the kill (tasks that outlived the kill can send it before the restart).

The last line holds the issue's targets (parallelism 2: >= 100k events/s, p99 under
2 s; recovery under 10 s) with their values.

    python benchmarks/live.py --rate 100000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TICK_S = 0.005  # the producer's pacing step
HEAD, WARM_CHUNK, WARM_PAUSE_S = 2_048, 50, 0.1  # the warm-up: 500 events a second
TRICKLE_RATE = WARM_CHUNK / WARM_PAUSE_S
TARGET_RATE, TARGET_P99_S, TARGET_RECOVERY_S = 100_000, 2.0, 10.0


def live_times_us(rates: list[tuple[int, float]]) -> np.ndarray:
    """Event times (us) of a live stream sent in stretches of (events, events a second):
    in order, each stretch's events ``1 / rate`` s apart, so event time moves as the
    producer's clock does."""
    gaps = np.concatenate([np.full(n, 1e6 / rate) for n, rate in rates])
    return int(time.time()) * 1_000_000 + np.round(np.cumsum(gaps)).astype(np.int64)


def encoded_records(
    times_us: np.ndarray, seed: int = 0
) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
    """As many events of the synthetic stream (its keys, features, labels and event
    ids) as ``times_us`` holds, as (key, JSON value) records in their order of arrival,
    the ``i``-th at event time ``times_us[i]``; and each event id's place in that order
    (the sink's record keys name the event id)."""
    from model import batch as mb
    from model.streams.synthetic import SyntheticConfig, generate

    out: list[tuple[bytes, bytes]] = []
    order: list[int] = []
    count = len(times_us)
    for chunk in generate(SyntheticConfig(num_events=count, seed=seed)):
        b = chunk.batch
        stretch = times_us[len(order) : len(order) + b.num_rows]
        times = np.datetime_as_string(stretch.astype("datetime64[us]"))
        feats = mb.features_numpy(b).tolist()
        labels = mb.labels_numpy(b)
        assert labels is not None
        names = [f"x{i}" for i in range(len(feats[0]))]
        keys = b.column(mb.KEY).to_pylist()
        ids = b.column(mb.EVENT_ID).to_pylist()
        order += ids
        for i, key in enumerate(keys):
            fields = ",".join(f'"{n}":{v!r}' for n, v in zip(names, feats[i], strict=True))
            value = (
                f'{{"timestamp":"{times[i]}","key":"{key}","event_id":{ids[i]},'
                f'{fields},"label":{int(labels[i])}}}'
            )
            out.append((key.encode(), value.encode()))
    place = np.full(count, -1, dtype=np.int64)
    place[np.asarray(order)] = np.arange(count)
    assert (place >= 0).all(), "event ids 0 .. count - 1"
    return out, place


def _producer(bootstrap: str) -> Any:
    from confluent_kafka import Producer

    from model.streams.topics import QUIET

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 2_000_000,
            **QUIET,
        }
    )


def _send(producer: Any, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.01)
    producer.poll(0)


def paced(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float
) -> np.ndarray:
    """Send ``records`` at ``rate`` a second; the wall time each was handed to the
    client."""
    producer = _producer(bootstrap)
    sent_at = np.zeros(len(records))
    start, done = time.time(), 0
    while done < len(records):
        due = min(len(records), int((time.time() - start) * rate) + 1)
        if due > done:
            _send(producer, topic, records[done:due])
            sent_at[done:due] = time.time()
            done = due
        else:
            time.sleep(TICK_S)
    producer.flush(120)
    return sent_at


class SinkWatch:
    """Notes when each event's prediction becomes visible on the sink topic
    (``read_committed``), in a thread."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from model.streams.topics import QUIET

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"live-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                **QUIET,
            }
        )
        self._consumer.assign(
            [TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        self.seen: dict[int, float] = {}  # event id -> first time visible
        self.repeats = 0
        self._arrived: list[int] = []  # the ids of ``seen``, in the order they came
        self._counted: dict[tuple[int, int], tuple[int, int]] = {}  # range -> (ids, count)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            messages = self._consumer.consume(10_000, timeout=0.1)
            now = time.time()
            for m in messages:
                key = m.key()
                if m.error() is not None or not key:
                    continue
                event = int(key[key.rindex(b",") + 1 : -1])  # the key: [key, event_id]
                if event in self.seen:
                    self.repeats += 1
                else:
                    self.seen[event] = now
                    self._arrived.append(event)

    def count_between(self, place: np.ndarray, low: int, high: int) -> int:
        """How many of the events sent at places ``low`` to ``high`` came out (counted
        on from the last call for the same range: the trickles ask every 0.1 s, and
        ``seen`` grows to a million ids)."""
        done, count = self._counted.get((low, high), (0, 0))
        arrived = len(self._arrived)
        places = place[np.asarray(self._arrived[done:arrived], dtype=np.int64)]
        count += int(((places >= low) & (places < high)).sum())
        self._counted[(low, high)] = (arrived, count)
        return count

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


@dataclass
class Variant:
    name: str
    pipeline: str
    runner: list[str]  # the command line's runner arguments
    parallelism: int | None = None
    kill: bool = False
    standby: bool = False  # a spare TaskManager while it runs
    figures: dict[str, Any] = field(default_factory=dict)


def run_variant(v: Variant, args: argparse.Namespace, bootstrap: str, cluster: Any,
                stream: tuple[list[tuple[bytes, bytes]], np.ndarray],
                tmp: Path) -> dict[str, Any]:  # fmt: skip
    """One variant end to end: its line's figures."""
    from runners.kafka.client import create_topic
    from runners.processes import terminate

    topic = f"live-{v.name}-{v.pipeline}-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, 2)
    create_topic(bootstrap, f"{topic}-out", 2)
    records, place = stream
    head = min(HEAD, args.warmup)  # what the command line tells the stream's schema from
    producer = _producer(bootstrap)
    _send(producer, topic, records[:head])
    producer.flush(60)
    watch = SinkWatch(bootstrap, f"{topic}-out", 2)
    out = tmp / f"{v.name}-{v.pipeline}"
    argv = [sys.executable, "pipelines/main.py", *v.runner, "--pipeline", v.pipeline,
            "--source", "kafka", "--bootstrap", bootstrap, "--topic", topic,
            "--label-column", "label", "--kafka-until", "never", "--kafka-stop-idle",
            str(args.stop_idle), "--sink-topic", f"{topic}-out", "--output", str(out),
            "--quiet", "--json"]  # fmt: skip
    with open(tmp / f"{v.name}-{v.pipeline}.err", "wb") as err:
        job = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
    line: dict[str, Any] = {"benchmark": "live", "variant": v.name, "pipeline": v.pipeline}
    try:
        # the warm-up trickles in (windows close only as event time moves on) until
        # predictions of half of it are out: the job runs, end to end
        def warm(sent: int) -> bool:
            shown = watch.count_between(place, 0, sent)
            return shown >= min(head, 1_000) and shown >= sent / 2

        first = args.warmup  # the paced events' places: first .. last
        if not warm(_trickle(producer, topic, records, head, first, warm, job)):
            raise RuntimeError(f"{v.name}: no predictions of the warm-up came out")
        last = first + round(args.rate * args.seconds)
        paced_records = records[first:last]
        kill_at: list[float] = []
        if v.kill:
            threading.Thread(
                target=_kill_later, args=(cluster, args.seconds / 2, kill_at), daemon=True
            ).start()
        sent_at = paced(bootstrap, topic, paced_records, args.rate)

        # and a trickle after them, until they are all out (as in a stream that goes on)
        def all_out(_: int) -> bool:
            return watch.count_between(place, first, last) >= len(paced_records)

        _trickle(producer, topic, records, last, len(records), all_out, job)
        stdout, _ = job.communicate(timeout=args.seconds * 20 + 300)
    finally:
        if job.poll() is None:
            terminate([job.pid], 10)
        watch.stop()
    summary = json.loads(stdout.decode().strip().splitlines()[-1]) if stdout.strip() else {}
    places = place[np.fromiter(list(watch.seen), dtype=np.int64)]
    paced_out = (places >= first) & (places < last)
    out_at = np.fromiter(watch.seen.values(), dtype=np.float64)[paced_out]
    ids = places[paced_out] - first
    latency = out_at - sent_at[ids] if len(ids) else np.zeros(1)
    span = (out_at.max() - out_at.min()) if len(ids) > 1 else float("nan")
    flink = summary.get("flink") or {}
    line.update(
        rate=args.rate,
        produced=len(paced_records),
        predictions=len(ids),
        repeats_on_sink=watch.repeats,
        events_per_s=round(len(ids) / span) if len(ids) else 0,
        latency_p50_s=round(float(np.percentile(latency, 50)), 3),
        latency_p99_s=round(float(np.percentile(latency, 99)), 3),
        checkpoints=flink.get("checkpoints_completed"),
        checkpoint_ms_last=flink.get("last_checkpoint_ms"),
        checkpoint_ms_max=flink.get("max_checkpoint_ms"),
        events_in=summary.get("events_in"),
        balanced=summary.get("balanced"),
        exit_code=job.returncode,
    )
    if v.kill and kill_at:
        killed, running_again = kill_at[0], kill_at[1] if len(kill_at) > 1 else None
        after = out_at[out_at > (running_again or killed)]
        new = out_at[sent_at[ids] > killed]
        line.update(
            restarts=flink.get("restarts"),
            recovery_s=round(float(after.min() - killed), 2) if len(after) else None,
            caught_up_s=round(float(new.min() - killed), 2) if len(new) else None,
            job_running_again_s=round(running_again - killed, 2) if running_again else None,
        )
    return line


def _trickle(
    producer: Any,
    topic: str,
    records: list[tuple[bytes, bytes]],
    sent: int,
    limit: int,
    done: Callable[[int], bool],
    job: subprocess.Popen[bytes],
) -> int:
    """Send ``records`` from place ``sent`` on, :data:`TRICKLE_RATE` a second, until
    ``done(sent)``, the place ``limit`` or the job's end; the place reached."""
    while not done(sent) and sent < limit and job.poll() is None:
        _send(producer, topic, records[sent : min(limit, sent + WARM_CHUNK)])
        producer.flush(10)
        sent = min(limit, sent + WARM_CHUNK)
        time.sleep(WARM_PAUSE_S)
    return sent


def _kill_later(cluster: Any, after_s: float, kill_at: list[float]) -> None:
    """Kill a TaskManager that runs tasks after ``after_s``, start a new one; note the
    kill's time and when the restarted job's tasks all ran again, by Flink's clock
    (each subtask's switch to RUNNING): its REST answers lag by up to 3 s (its
    cache of the job's state), what is seen polling them would too."""
    from runners.flink.rest import _get

    time.sleep(after_s)
    cluster.kill("taskmanager")
    killed = time.time()
    kill_at.append(killed)
    cluster.start_taskmanager()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        jobs = (_get(cluster.rest_url + "/jobs/overview") or {}).get("jobs", [])
        job = max(jobs, key=lambda j: j["start-time"], default=None)
        tasks = (job or {}).get("tasks", {})
        if job and job["state"] == "RUNNING" and tasks.get("running") == tasks.get("total"):
            base = f"{cluster.rest_url}/jobs/{job['jid']}"
            running = [
                t.get("timestamps", {}).get("RUNNING", 0) / 1000
                for vertex in (_get(base) or {}).get("vertices", [])
                for t in (_get(f"{base}/vertices/{vertex['id']}/subtasktimes") or {}).get(
                    "subtasks", []
                )
            ]
            if running and min(running) > killed:
                kill_at.append(max(running))
                return
        time.sleep(0.05)


def _targets(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    p2 = [x for x in lines if x["variant"] == "flink_p2"]
    kill = [x for x in lines if x["variant"] == "flink_p2_kill"]
    rate = min((x.get("events_per_s", 0) for x in p2), default=0)
    p99 = max((x.get("latency_p99_s", float("inf")) for x in p2), default=float("inf"))
    recovery = max((x.get("recovery_s") or float("inf") for x in kill), default=float("inf"))
    return {
        "flink_p2_events_per_s": {
            "value": rate, "goal": f">= {TARGET_RATE}", "met": rate >= TARGET_RATE},
        "flink_p2_latency_p99_s": {
            "value": p99, "goal": f"< {TARGET_P99_S}", "met": p99 < TARGET_P99_S},
        "recovery_s": {
            "value": recovery, "goal": f"< {TARGET_RECOVERY_S}",
            "met": recovery < TARGET_RECOVERY_S},
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from runners import flink
    from runners.flink import LocalCluster
    from runners.kafka import LocalBroker, install
    from runners.processes import free_port

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=TARGET_RATE, help="events a second")
    ap.add_argument("--seconds", type=float, default=10.0, help="of paced production")
    ap.add_argument("--warmup", type=int, default=40_000, help="at most this many events")
    ap.add_argument(
        "--stop-idle",
        type=float,
        default=15.0,
        help="the read ends once idle this long",
    )
    ap.add_argument("--pipelines", default="score,classify")
    ap.add_argument(
        "--variants", default="flink_p1,flink_p2,prism,flink_p2_kill_cold,flink_p2_kill"
    )
    args = ap.parse_args(argv)
    head = min(HEAD, args.warmup)
    stream = encoded_records(
        live_times_us(
            [
                (head, args.rate),  # what the command line sizes windows by
                (args.warmup - head, TRICKLE_RATE),
                (round(args.rate * args.seconds), args.rate),
                (args.warmup, TRICKLE_RATE),
            ]
        )
    )
    wanted = args.variants.split(",")
    variants = [  # those with a standby TaskManager last: it stays
        Variant(name, pipeline, [], parallelism=p, kill=kill, standby=standby)
        for name, p, kill, standby in (
            ("flink_p1", 1, False, False), ("flink_p2", 2, False, False),
            ("prism", None, False, False), ("flink_p2_kill_cold", 2, True, False),
            ("flink_p2_kill", 2, True, True))
        if name in wanted
        for pipeline in (args.pipelines.split(",") if not kill else ["score"])
    ]  # fmt: skip
    lines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sml-live-") as tmp_dir:
        tmp = Path(tmp_dir)
        install()
        broker = LocalBroker(tmp / "kafka", free_port(), free_port())
        broker.start()
        cluster = None
        try:
            if any(v.parallelism for v in variants):
                try:
                    flink.job_server()
                    cluster = LocalCluster(tmp / "flink", rest_port=free_port())
                    cluster.start()
                except flink.FlinkUnavailable as err:
                    print(
                        json.dumps({"benchmark": "live", "variant": "flink", "skipped": str(err)})
                    )
                    variants = [v for v in variants if not v.parallelism]
            for v in variants:
                if v.parallelism:
                    assert cluster is not None
                    if v.standby and (cluster.status() or {}).get("taskmanagers", 0) < 2:
                        cluster.start_taskmanager()
                        cluster.wait_for_taskmanagers(2, 120)
                    v.runner = ["--runner", "FlinkRunner", "--flink-master", cluster.master,
                                "--parallelism", str(v.parallelism),
                                "--checkpointing-interval", "1000"]  # fmt: skip
                else:
                    v.runner = ["--runner", "PrismRunner"]
                try:
                    line = run_variant(v, args, broker.bootstrap, cluster, stream, tmp)
                except (RuntimeError, subprocess.TimeoutExpired) as err:  # the others run
                    line = {"benchmark": "live", "variant": v.name, "pipeline": v.pipeline,
                            "error": str(err)}  # fmt: skip
                lines.append(line)
                print(json.dumps(line), flush=True)
        finally:
            if cluster is not None:
                cluster.stop()
            broker.stop()
    targets = _targets(lines)
    met = all(t["met"] for t in targets.values())
    print(json.dumps({"benchmark": "live", "targets": targets, "all_met": met}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
