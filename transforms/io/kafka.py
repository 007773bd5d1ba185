"""Kafka as a source of micro-batches: a splittable DoFn, one element per partition.

:class:`KafkaSource` reads every partition of a topic with Kafka's Python client
(``confluent-kafka``, no Java expansion service):

- **restriction**: the partition's offset range, from the oldest offset it still holds
  to its end offset at pipeline construction (``until="end"``: a bounded read, what a
  test or a replay wants), or open-ended (``until="never"``: a live read); the tracker
  takes checkpoints but never halves a range (one reader a partition keeps each key's
  order). A position the broker has deleted is an error, never a silent skip;
- **reads** many records per poll and emits them as one micro-batch
  (:mod:`model.streams.records`: JSON records; a bad record goes to ``dead_letter``
  with its partition and offset, the others pass): a poll gathers records until it
  has ``max_records`` or ``linger_s`` has passed since its first (Kafka's own
  ``linger.ms``, on the reading side: a reader that keeps up with its producer would
  otherwise emit a batch of a few records each time, and every batch costs the
  pipeline the same, whatever its size). An invocation reads for at most ``poll_s``
  seconds, then checkpoints itself (``defer_remainder``). The end of what a
  partition holds is an event of the client: a bounded read is done there, whatever
  offsets hold no record (transaction markers);
- **claims** the first record of a poll, then its last: a split between the two (a
  runner's checkpoint) leaves the records past it to the residual, and the invocation
  ends there, claiming nothing more;
- **watermark** (a manual estimator): the newest event time seen in the partition
  minus ``max_out_of_order_s`` (bounded out-of-orderness); each batch carries the
  watermark in force before it (as the replay source's do), so the windowing judges
  its late events. A partition that has read all it holds and had nothing new for
  ``idle_s`` seconds stops holding the watermark back: it moves to the newest event time
  any partition of the same read has shown in this worker process, minus the same
  bound (a worker whose partitions are all idle waits for data); ``stop_idle_s`` ends
  a live read that has been idle that long;
- **its end**: a partition whose read is over leaves a file in ``done_dir`` (when one
  is given), and ``SourceOut.finished(since)`` says when every partition has left one
  after ``since`` (a wall time: files from before a restore, whose read goes on, do
  not count): what a runner that keeps the job running after its sources end (Flink
  with checkpointing on a live read) waits for to drain it. A folder the workers
  cannot write leaves no file: the job then runs until it is stopped.

Runners: Prism and Flink run ``until="never"`` live (the tests compare a live read on
each with a bounded one). Beam's streaming DirectRunner (the BundleBasedDirectRunner)
fails on this splittable DoFn in our runs ("... was not replaced as expected"), so the
command line reads to the end offsets there, on the FnApiRunner (a bounded run). On
Flink with checkpointing on, :mod:`runners.flink` has each checkpoint finish the bundle
(without it this read's watermark never moved: a test compares a checkpointed live read
with a bounded one), and a restore re-reads from the checkpointed offsets (the test
that kills a TaskManager mid-stream, ``tests/runners/test_flink_recovery.py``).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms import window as bw
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from model import batch as mb
from model.streams.records import RecordFormat, decode_records
from model.streams.topics import QUIET, count_records, offset_ranges
from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.sources import SourceOut, stamped

NEVER = sys.maxsize  # the end of a live read's offset range
Until = Literal["end", "never"]
Partition = tuple[str, int, int, int]  # topic, partition, first offset, end offset


@dataclass(frozen=True)
class KafkaRead:
    """How :class:`KafkaSource` reads (see the module docstring)."""

    bootstrap: str
    topic: str
    fmt: RecordFormat
    until: Until = "end"
    max_out_of_order_s: float = 0.0
    idle_s: float = 2.0
    max_records: int = 4_096
    linger_s: float = 0.1
    poll_s: float = 0.25
    # a live read that ends once its partition has had nothing new for this long
    stop_idle_s: float | None = None
    # names this read's partitions among the process's others (their newest event time)
    read_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # where each partition whose read is over leaves a file (see the module docstring)
    done_dir: str | None = None

    def __post_init__(self) -> None:
        if self.until not in ("end", "never"):
            msg = f"until must be 'end' or 'never', got {self.until!r}"
            raise ValueError(msg)
        if self.max_out_of_order_s < 0 or self.idle_s <= 0 or self.poll_s <= 0 or self.linger_s < 0:
            msg = (
                "need max_out_of_order_s >= 0, idle_s > 0, poll_s > 0 and linger_s >= 0, got "
                f"{self.max_out_of_order_s!r}, {self.idle_s!r}, {self.poll_s!r}, "
                f"{self.linger_s!r}"
            )
            raise ValueError(msg)
        if self.stop_idle_s is not None and (self.stop_idle_s <= 0 or self.until == "end"):
            msg = (
                "stop_idle_s ends a live read (until='never') and must be > 0, got "
                f"{self.stop_idle_s!r} with until={self.until!r}"
            )
            raise ValueError(msg)
        if self.max_records <= 0:
            msg = f"max_records must be > 0, got {self.max_records!r}"
            raise ValueError(msg)

    @property
    def lag_us(self) -> int:
        return round(self.max_out_of_order_s * mb.US_PER_SECOND)


class _PartitionTracker(OffsetRestrictionTracker):
    """A partition's offsets, read in order by one reader: the runner may checkpoint
    (split at the current position), never cut the rest of the range in two (an
    offset's place in a range says nothing of the records' keys or times)."""

    def try_split(self, fraction_of_remainder: float) -> Any:
        if fraction_of_remainder > 0:
            return None
        return super().try_split(0)

    def is_bounded(self) -> bool:
        # what Beam's default truncate() asks when draining: a bounded read finishes,
        # a live one stops where it is
        return self.current_restriction().stop < NEVER


class _Offsets(RestrictionProvider):
    def initial_restriction(self, element: Partition) -> OffsetRange:
        return OffsetRange(element[2], element[3])

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _PartitionTracker(restriction)

    def restriction_size(self, element: Partition, restriction: OffsetRange) -> int:
        return min(restriction.size(), 1 << 40)

    # Beam's default split() leaves a restriction whole: one reader a partition, so
    # its order is the key's order


# Beam's parameter defaults (module-level)
OFFSETS = beam.DoFn.RestrictionParam(_Offsets())
WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())

# The newest event time each read has shown in this process (for idle partitions).
_NEWEST: dict[str, int] = {}
_NEWEST_LOCK = threading.Lock()


def _seen(read_id: str, newest_us: int) -> None:
    with _NEWEST_LOCK:
        _NEWEST[read_id] = max(_NEWEST.get(read_id, newest_us), newest_us)


class _ReadPartitionDoFn(beam.DoFn):
    def __init__(self, read: KafkaRead) -> None:
        self._read = read

    def setup(self) -> None:
        self._consumers: dict[tuple[str, int], tuple[Any, int]] = {}  # with their position
        self._active: dict[tuple[str, int], float] = {}  # last time records came
        self._caught_up: set[tuple[str, int]] = set()  # read all they held when last asked
        self._events = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_IN)

    def teardown(self) -> None:
        for consumer, _ in getattr(self, "_consumers", {}).values():
            consumer.close()
        self._consumers = {}

    def _consumer(self, topic: str, partition: int, position: int) -> Any:
        """A consumer of the partition whose next record is at ``position``."""
        from confluent_kafka import Consumer, TopicPartition

        held = self._consumers.get((topic, partition))
        if held is not None and held[1] == position:
            return held[0]
        if held is None:
            consumer = Consumer(
                {
                    "bootstrap.servers": self._read.bootstrap,
                    "group.id": f"sml-{topic}",  # offsets are the restriction's, not committed
                    "enable.auto.commit": False,
                    # the end of what the partition holds is an event: a bounded read knows
                    # it is done, a live one that it has caught up
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "error",  # a position the broker deleted: an error
                    "queued.max.messages.kbytes": 16_384,
                    **QUIET,
                }
            )
            consumer.assign([TopicPartition(topic, partition, position)])
        else:
            consumer = held[0]
            consumer.seek(TopicPartition(topic, partition, position))
        self._consumers[(topic, partition)] = (consumer, position)
        return consumer

    def _release(self, topic: str, partition: int) -> None:
        """Close the consumer of a partition whose restriction is done."""
        held = self._consumers.pop((topic, partition), None)
        if held is not None:
            held[0].close()

    def process(
        self,
        element: Partition,
        tracker: Any = OFFSETS,
        estimator: Any = WATERMARK,
    ) -> Iterator[Any]:
        yield from self._read_partition(element, tracker, estimator)

    def _read_partition(self, element: Partition, tracker: Any, estimator: Any) -> Iterator[Any]:
        topic, partition = element[0], element[1]
        read = self._read
        position = tracker.current_restriction().start
        if position >= tracker.current_restriction().stop:
            return
        consumer = self._consumer(topic, partition, position)
        deadline = time.monotonic() + read.poll_s
        while True:
            stop = tracker.current_restriction().stop
            polled, end = self._poll(consumer, stop)
            if polled:  # where the consumer is now, whatever of it is ours
                self._consumers[(topic, partition)] = (consumer, polled[-1].offset() + 1)
            records = [m for m in polled if m.offset() < stop]
            if records:
                claimed = self._claimed(tracker, estimator, topic, partition, records)
                if claimed is None:
                    return  # a split before the first record: the residual reads them
                outputs, position, whole = claimed
                yield from outputs
                self._active[(topic, partition)] = time.monotonic()
                self._caught_up.discard((topic, partition))
                if not whole:
                    return  # a split within the poll: never claim again (Beam's contract)
            if end is not None and end >= position:  # (not an end passed within the poll)
                position = end  # offsets with no record (transaction markers)
                self._caught_up.add((topic, partition))
            idle = not records and self._idle(estimator, consumer, topic, partition, position)
            if position >= stop or idle:
                tracker.try_claim(stop)  # read to its end (or idle long enough): done
                self._release(topic, partition)
                if read.done_dir is not None:
                    _leave_done(read.done_dir, _done_name(topic, partition))
                return
            if time.monotonic() >= deadline:
                tracker.defer_remainder(Duration(seconds=0.05 if records else 0.5))
                return

    def _poll(self, consumer: Any, stop: int) -> tuple[list[Any], int | None]:
        """The records of one poll (see ``linger_s``), and the partition's end offset if
        the poll reached it; an error the client cannot get past is raised."""
        from confluent_kafka import KafkaError, KafkaException

        read = self._read
        records: list[Any] = []
        end = None
        wait, deadline = 0.1, None
        while True:
            for m in consumer.consume(read.max_records - len(records), timeout=wait):
                err = m.error()
                if err is None:
                    records.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    end = m.offset()
                elif err.fatal() or not err.retriable():
                    raise KafkaException(err)
            if not records or len(records) >= read.max_records or records[-1].offset() + 1 >= stop:
                return records, end
            now = time.monotonic()
            deadline = now + read.linger_s if deadline is None else deadline
            if now >= deadline:
                return records, end
            wait = deadline - now

    def _claimed(
        self, tracker: Any, estimator: Any, topic: str, partition: int, records: list[Any]
    ) -> tuple[list[Any], int, bool] | None:
        """The outputs of the records this invocation may emit, the position after them,
        and whether all of them were (a split between the first and the last claim
        leaves the rest to the residual); None when none is ours."""
        first = records[0].offset()
        if not tracker.try_claim(first):
            return None
        last = records[-1].offset()
        whole = last == first or tracker.try_claim(last)
        if not whole:
            stop = tracker.current_restriction().stop  # the split point
            records = [m for m in records if m.offset() < stop]
        chunk = decode_records(
            [m.value() or b"" for m in records],
            partition=partition,
            offsets=[m.offset() for m in records],
            fmt=self._read.fmt,
            source=f"kafka:{topic}",
        )
        watermark = _current(estimator)
        stamp = Timestamp(micros=max(watermark, 0))
        outputs: list[Any] = [
            beam.pvalue.TaggedOutput("dead_letter", bw.TimestampedValue(record, stamp))
            for record in chunk.dead
        ]
        rows = sum(d.rows for d in chunk.dead)
        if chunk.batch is not None and chunk.batch.num_rows:
            batch = mb.with_watermark(chunk.batch, watermark)
            rows += batch.num_rows
            outputs.append(stamped(batch))
            newest = int(mb.event_times_us(batch).max())
            _seen(self._read.read_id, newest)
            own = newest - self._read.lag_us
            if own > watermark:
                estimator.set_watermark(Timestamp(micros=own))
        self._events.inc(rows)
        return outputs, records[-1].offset() + 1, whole

    def _idle(
        self, estimator: Any, consumer: Any, topic: str, partition: int, position: int
    ) -> bool:
        """A partition that has read all it holds and had nothing new for ``idle_s``
        stops holding the watermark back; True when that has lasted ``stop_idle_s``
        (the read is to end). All it holds: the client's end event (delivered once
        each time the end is reached), and the end offset the client last heard of
        not past ``position`` (a read resumed late, a runner busy elsewhere, may come
        back to a backlog its first poll does not yet show)."""
        if (topic, partition) not in self._caught_up:
            return False
        from confluent_kafka import TopicPartition

        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
        if high is not None and high > position:
            self._caught_up.discard((topic, partition))
            return False
        quiet = time.monotonic() - self._active.setdefault((topic, partition), time.monotonic())
        if quiet < self._read.idle_s:
            return False
        with _NEWEST_LOCK:
            newest = _NEWEST.get(self._read.read_id)
        if newest is not None and newest - self._read.lag_us > _current(estimator):
            estimator.set_watermark(Timestamp(micros=newest - self._read.lag_us))
        return self._read.stop_idle_s is not None and quiet >= self._read.stop_idle_s


class _LiveReadPartitionDoFn(_ReadPartitionDoFn):
    """The same read of an open-ended offset range: unbounded output."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: Partition,
        tracker: Any = OFFSETS,
        estimator: Any = WATERMARK,
    ) -> Iterator[Any]:
        yield from self._read_partition(element, tracker, estimator)


def _done_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}.done"


def _leave_done(directory: str, name: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
        Path(directory, name).touch()
    except OSError:
        pass  # (a worker elsewhere): the job runs until stopped, as documented


def _all_done(directory: str, names: list[str], since: float = 0.0) -> bool:
    """Whether every file ``names`` is in ``directory``, left after ``since``."""
    try:
        return all(os.stat(os.path.join(directory, n)).st_mtime > since for n in names)
    except OSError:
        return False


def _current(estimator: Any) -> int:
    """The estimator's watermark in microseconds (the minimum before any)."""
    wm = estimator.current_watermark()
    return MIN_TIMESTAMP.micros if wm is None else int(wm.micros)


class KafkaSource(beam.PTransform):
    """A topic's partitions as micro-batches plus dead letters (:class:`SourceOut`);
    see the module docstring. The partitions (and, reading ``until="end"``, their end
    offsets) are looked up when the pipeline is built."""

    def __init__(self, read: KafkaRead) -> None:
        super().__init__()
        self._read = read

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        read = self._read
        ranges = offset_ranges(read.bootstrap, read.topic)  # from the oldest still held
        elements: list[Partition] = [
            (read.topic, p, low, high if read.until == "end" else NEVER)
            for p, (low, high) in sorted(ranges.items())
        ]
        out = (
            pbegin
            | "Partitions" >> beam.Create(elements).with_output_types(tuple[str, int, int, int])
            | "ReadPartitions"
            >> beam.ParDo(
                _ReadPartitionDoFn(read) if read.until == "end" else _LiveReadPartitionDoFn(read)
            )
            .with_output_types(pa.RecordBatch, dead_letter=DeadLetter)
            .with_outputs("dead_letter", main="batches")
        )
        read_ranges = {p: (first, end) for _, p, first, end in elements}
        recount = functools.partial(count_records, read.bootstrap, read.topic, read_ranges)
        finished = None
        if read.done_dir is not None:
            names = [_done_name(read.topic, p) for p in read_ranges]
            finished = functools.partial(_all_done, read.done_dir, names)
        return SourceOut(
            out.batches, out.dead_letter, events=None, recount=recount, finished=finished
        )
