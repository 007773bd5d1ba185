"""A Kafka topic as the sources read it: its partitions, their end offsets, its
first records (Kafka's client, ``confluent-kafka``; no Beam)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

# librdkafka logs every failed connection attempt to stderr; what goes wrong reaches
# the caller as an exception instead
QUIET = {"log_level": 2}


class TopicError(RuntimeError):
    """A topic could not be created or read (the broker's answer says why)."""


def _metadata(bootstrap: str, topic: str | None, timeout_s: float) -> Any:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    try:
        return admin.list_topics(topic, timeout=timeout_s)
    except KafkaException as err:
        raise TopicError(f"no Kafka broker answers at {bootstrap}: {err}") from None


def topics_of(bootstrap: str, timeout_s: float = 10.0) -> dict[str, int]:
    """The broker's topics (not its internal ones) and their partition counts;
    :class:`TopicError` when no broker answers."""
    meta = _metadata(bootstrap, None, timeout_s)
    return {name: len(t.partitions) for name, t in meta.topics.items() if not name.startswith("__")}


def partitions_of(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The partition numbers of ``topic``; :class:`TopicError` when it does not exist
    or no broker answers."""
    found = _metadata(bootstrap, topic, timeout_s).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise TopicError(f"no topic {topic!r} on {bootstrap}")
    return sorted(found.partitions)


def offset_ranges(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    """Each partition's oldest offset still held and next offset to be written (its low
    and high watermarks) now."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "sml-offsets", **QUIET})
    try:
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions_of(bootstrap, topic)
        }
    except KafkaException as err:
        raise TopicError(f"cannot read the offsets of {topic!r} on {bootstrap}: {err}") from None
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's next offset to be written (its high watermark) now."""
    return {p: high for p, (_, high) in offset_ranges(bootstrap, topic).items()}


def head(bootstrap: str, topic: str, records: int = 2_048, timeout_s: float = 10.0) -> list[bytes]:
    """Up to ``records`` values from the start of the topic's partitions (what the
    command line tells a stream's schema and time scale from)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sml-head",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }  # from the oldest still held
        | QUIET
    )
    try:
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions_of(bootstrap, topic)])
        values: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(values) < records and time.monotonic() < deadline:
            got = consumer.consume(records - len(values), timeout=0.5)
            values += [v for m in got if m.error() is None and (v := m.value()) is not None]
            if not got and values:
                break  # caught up
        return values
    finally:
        consumer.close()


def _committed(
    bootstrap: str,
    topic: str,
    ranges: dict[int, tuple[int, int]],
    timeout_s: float,
) -> Iterator[Any]:
    """The records of committed transactions (``read_committed``) in each partition's
    offset range ``[first, end)``, an end past the partition's to its end now. A
    partition is done only at its end (an open transaction, until it is committed or
    times out, holds what follows it back); a client error, a first offset the broker
    no longer holds, or a partition not read to its end in time raises TopicError."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    now = end_offsets(bootstrap, topic)
    ends = {p: min(end, now.get(p, 0)) for p, (_, end) in ranges.items()}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "sml-read",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
        }
        | QUIET
    )
    try:
        left = {p for p, (first, _) in ranges.items() if ends[p] > first}
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in left])
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for m in consumer.consume(10_000, timeout=0.5):
                p, offset, err = m.partition(), m.offset(), m.error()
                if p is None or offset is None:
                    continue
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise TopicError(f"cannot read {topic!r}: {err}")
                    if offset >= ends[p]:
                        left.discard(p)
                    continue
                if offset < ends[p]:
                    yield m
                if offset + 1 >= ends[p]:
                    left.discard(p)
        if left:
            msg = f"{topic!r}: partitions {sorted(left)} not read to their end in {timeout_s} s"
            raise TopicError(msg)
    finally:
        consumer.close()


def read_committed(
    bootstrap: str, topic: str, timeout_s: float = 60.0
) -> list[tuple[bytes, bytes]]:
    """Every record of committed transactions ``topic`` holds, as ``(key, value)``,
    partition by partition in offset order (see :func:`_committed`)."""
    everything = dict.fromkeys(partitions_of(bootstrap, topic), (0, sys.maxsize))
    return [
        (m.key(), m.value())
        for m in _committed(bootstrap, topic, everything, timeout_s)
        if m.key() is not None and m.value() is not None
    ]


def read_keyed(bootstrap: str, topic: str, timeout_s: float = 60.0) -> dict[bytes, bytes]:
    """:func:`read_committed` as the last value of each key (what a compacted topic
    keeps)."""
    return dict(read_committed(bootstrap, topic, timeout_s))


def count_records(
    bootstrap: str, topic: str, ranges: dict[int, tuple[int, int]], timeout_s: float = 60.0
) -> int:
    """How many records of committed transactions ``topic`` holds in each partition's
    offset range ``[first, end)``; an end past the partition's counts to its end now
    (a live read that ran until its topic went idle read that far)."""
    return sum(1 for _ in _committed(bootstrap, topic, ranges, timeout_s))
