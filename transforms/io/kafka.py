"""Kafka as a source of micro-batches: a splittable DoFn, one element per partition.

:class:`KafkaSource` reads every partition of a topic with Kafka's Python client
(``confluent-kafka``, no Java expansion service):

- **restriction**: the partition's offset range, ``[start, end)``: to the end offsets
  at pipeline construction (``until="end"``: a bounded read, what a test or a replay
  wants), or open-ended (``until="never"``: a live read). On Flink the restriction is
  part of the checkpoint: a restore re-reads exactly from the checkpointed offsets;
- **reads** many records per poll (``max_records``) and emits them as one micro-batch
  (:mod:`model.streams.records`: JSON records; a bad record goes to ``dead_letter``
  with its partition and offset, the others pass). An invocation reads for at most
  ``poll_s`` seconds, then checkpoints itself (``defer_remainder``), so a runner can
  checkpoint between invocations;
- **claims** the first record of a poll, then its last: a split between the two (a
  runner's checkpoint) leaves the records past it to the residual, which re-reads them;
- **watermark** (a manual estimator): the newest event time seen in the partition
  minus ``max_out_of_order_s`` (bounded out-of-orderness); each batch carries the
  watermark in force before it (as the replay source's do), so the windowing judges
  its late events. A partition with nothing new for ``idle_s`` seconds that has read
  all it was given stops holding the watermark back: it moves to the newest event time
  any partition of the topic has shown in this worker process, minus the same bound.
  (A worker whose partitions are all idle waits for data.)

Runners: on Flink and Prism, ``until="never"`` runs live (their SDF support carries
watermarks and checkpoints); Beam's DirectRunner holds an SDF's output watermark until
its restriction is done, so there, use ``until="end"``: the topic's records at
construction are read, the windows fire as the read completes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
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
from model.streams.topics import QUIET, end_offsets, partitions_of
from model.vocabulary import NAMESPACE, DeadLetter, Metric
from transforms.io.sources import SourceOut

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
    poll_s: float = 1.0
    # a live read that ends once its partition has had nothing new for this long
    stop_idle_s: float | None = None

    def __post_init__(self) -> None:
        if self.until not in ("end", "never"):
            msg = f"until must be 'end' or 'never', got {self.until!r}"
            raise ValueError(msg)
        if self.max_out_of_order_s < 0 or self.idle_s <= 0 or self.poll_s <= 0:
            msg = (
                "need max_out_of_order_s >= 0, idle_s > 0 and poll_s > 0, got "
                f"{self.max_out_of_order_s!r}, {self.idle_s!r}, {self.poll_s!r}"
            )
            raise ValueError(msg)
        if self.stop_idle_s is not None and self.stop_idle_s <= 0:
            msg = f"stop_idle_s must be > 0 (or None), got {self.stop_idle_s!r}"
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
        return self.current_restriction().stop < NEVER


class _Offsets(RestrictionProvider):
    def initial_restriction(self, element: Partition) -> OffsetRange:
        return OffsetRange(element[2], element[3])

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return _PartitionTracker(restriction)

    def restriction_size(self, element: Partition, restriction: OffsetRange) -> int:
        return min(restriction.size(), 1 << 40)

    def split(self, element: Partition, restriction: OffsetRange) -> Iterator[OffsetRange]:
        yield restriction  # one reader a partition: its order is the key's order

    def truncate(self, element: Partition, restriction: OffsetRange) -> OffsetRange | None:
        # draining: a bounded read finishes, a live one stops where it is
        return restriction if restriction.stop < NEVER else None


# Beam's parameter defaults (module-level)
OFFSETS = beam.DoFn.RestrictionParam(_Offsets())
WATERMARK = beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider())

# The newest event time each topic has shown in this process (for idle partitions).
_NEWEST: dict[str, int] = {}
_NEWEST_LOCK = threading.Lock()


def _seen(topic: str, newest_us: int) -> int:
    with _NEWEST_LOCK:
        _NEWEST[topic] = max(_NEWEST.get(topic, newest_us), newest_us)
        return _NEWEST[topic]


class _ReadPartitionDoFn(beam.DoFn):
    def __init__(self, read: KafkaRead) -> None:
        self._read = read

    def setup(self) -> None:
        self._consumers: dict[tuple[str, int], tuple[Any, int]] = {}  # with their position
        self._active: dict[tuple[str, int], float] = {}  # last time records came
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
                    "enable.partition.eof": False,
                    "isolation.level": "read_committed",
                    **QUIET,
                }
            )
            consumer.assign([TopicPartition(topic, partition, position)])
        else:
            consumer = held[0]
            consumer.seek(TopicPartition(topic, partition, position))
        self._consumers[(topic, partition)] = (consumer, position)
        return consumer

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
        consumer = self._consumer(topic, partition, position)
        deadline = time.monotonic() + read.poll_s
        while True:
            stop = tracker.current_restriction().stop
            if position >= stop:
                tracker.try_claim(stop)  # past the end: the restriction is done
                return
            polled = [m for m in consumer.consume(read.max_records, timeout=0.1) if not m.error()]
            if polled:  # where the consumer is now, whatever of it is ours
                self._consumers[(topic, partition)] = (consumer, polled[-1].offset() + 1)
            records = [m for m in polled if m.offset() < stop]
            if records:
                claimed = self._claimed(tracker, estimator, topic, partition, records)
                if claimed is None:
                    return  # split before the first: the residual reads them
                outputs, position = claimed
                yield from outputs
                self._active[(topic, partition)] = time.monotonic()
            elif self._idle(estimator, topic, partition):
                tracker.try_claim(stop)  # idle long enough: the read ends here
                return
            if time.monotonic() >= deadline:
                tracker.defer_remainder(Duration(seconds=0.05 if records else 0.5))
                return

    def _claimed(
        self, tracker: Any, estimator: Any, topic: str, partition: int, records: list[Any]
    ) -> tuple[list[Any], int] | None:
        """The outputs of the records this invocation may emit (claimed: see the module
        docstring) and the position after them; None when none is ours."""
        first = records[0].offset()
        if not tracker.try_claim(first):
            return None
        last = records[-1].offset()
        if last > first and not tracker.try_claim(last):
            stop = tracker.current_restriction().stop  # a split between them
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
            times = mb.event_times_us(batch)
            outputs.append(bw.TimestampedValue(batch, Timestamp(micros=int(times.min()))))
            _seen(topic, int(times.max()))
            own = int(times.max()) - self._read.lag_us
            if own > watermark:
                estimator.set_watermark(Timestamp(micros=own))
        self._events.inc(rows)
        return outputs, records[-1].offset() + 1

    def _idle(self, estimator: Any, topic: str, partition: int) -> bool:
        """A partition with nothing new for ``idle_s`` stops holding the watermark back;
        True when it has had nothing new for ``stop_idle_s`` (the read is to end)."""
        quiet = time.monotonic() - self._active.setdefault((topic, partition), time.monotonic())
        if quiet < self._read.idle_s:
            return False
        with _NEWEST_LOCK:
            newest = _NEWEST.get(topic)
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
        yield from super().process(element, tracker, estimator)


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
        ends = end_offsets(read.bootstrap, read.topic) if read.until == "end" else None
        elements: list[Partition] = [
            (read.topic, p, 0, NEVER if ends is None else ends[p])
            for p in partitions_of(read.bootstrap, read.topic)
        ]
        out = (
            pbegin
            | "Partitions" >> beam.Create(elements).with_output_types(tuple[str, int, int, int])
            | "ReadPartitions"
            >> beam.ParDo(_ReadPartitionDoFn(read) if ends else _LiveReadPartitionDoFn(read))
            .with_output_types(pa.RecordBatch, dead_letter=DeadLetter)
            .with_outputs("dead_letter", main="batches")
        )
        return SourceOut(batches=out.batches, dead_letter=out.dead_letter, events=None)
