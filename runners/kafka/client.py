"""What the command line and the tests do with a broker through Kafka's client
(``confluent-kafka``, librdkafka): create a topic, feed it at a rate, read its head.

:func:`produce` is a load generator: events from the synthetic stream or a CSV file
(:mod:`model.streams`) as JSON records (:mod:`model.streams.records`), keyed by the
event's key (a key's events stay in order in one partition; their event time is in the
record), at ``rate`` events per second, stopping after ``count`` events or ``duration_s``
seconds, whichever comes first; the producer is idempotent (no duplicates on retry).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from model import batch as mb
from model.streams.records import encode_record
from model.streams.topics import QUIET, TopicError, topics_of


def create_topic(bootstrap: str, topic: str, partitions: int = 1, timeout_s: float = 30.0) -> bool:
    """Create ``topic`` with ``partitions`` (one replica); False when it exists."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    topics_of(bootstrap)  # a clear error at once when no broker answers
    future = admin.create_topics([NewTopic(topic, partitions, 1)], request_timeout=timeout_s)[topic]
    try:
        future.result(timeout_s)
    except KafkaException as err:
        if err.args and err.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise TopicError(f"cannot create topic {topic!r}: {err}") from None
    return True


@dataclass(frozen=True)
class Produced:
    """What :func:`produce` sent: events, seconds, and the rate reached."""

    events: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def produce(
    bootstrap: str,
    topic: str,
    events: Iterator[dict[str, Any]],
    *,
    rate: float | None = None,
    count: int | None = None,
    duration_s: float | None = None,
) -> Produced:
    """Send ``events`` (dicts, each with ``timestamp`` in microseconds and ``key``)
    as JSON records; see the module docstring."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            **QUIET,
        }
    )
    start = time.monotonic()
    sent = 0
    for fields in events:
        if count is not None and sent >= count:
            break
        elapsed = time.monotonic() - start
        if duration_s is not None and elapsed >= duration_s:
            break
        if rate:
            ahead = sent / rate - elapsed
            if ahead > 0.001:
                producer.poll(0)
                time.sleep(ahead)
        value = encode_record(_json_fields(fields))
        key = str(fields.get("key", "")).encode()
        while True:
            try:  # Kafka's own timestamp stays the time of sending: a replay of old
                # events stamped with their event times would be past the topic's
                # retention, and deleted as it is written
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        sent += 1
    left = producer.flush(60)
    if left:
        raise TopicError(f"{left} records were not delivered to {topic!r} within 60 s")
    return Produced(sent, time.monotonic() - start)


def _json_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """The record of an event: its time as ISO 8601 (UTC, microseconds)."""
    out = dict(fields)
    t_us = int(out["timestamp"])
    out["timestamp"] = str(np.datetime64(t_us, "us"))
    return out


def rows_of_batches(
    batches: Iterator[Any], feature_names: list[str], *, label_field: str = "label"
) -> Iterator[dict[str, Any]]:
    """Events (dicts) of micro-batches: key, timestamp (us), event_id, features by
    name, and the label (as ``label_field``) when the batch has one."""
    for batch in batches:
        keys = batch.column(mb.KEY).to_pylist()
        times = mb.event_times_us(batch).tolist()
        ids = batch.column(mb.EVENT_ID).to_pylist()
        feats = mb.features_numpy(batch).tolist()
        labels = mb.labels_numpy(batch)
        label_list = None if labels is None else labels.tolist()
        for i, key in enumerate(keys):
            row: dict[str, Any] = {"timestamp": times[i], "key": key, "event_id": ids[i]}
            row.update(zip(feature_names, feats[i], strict=True))
            if label_list is not None:
                row[label_field] = label_list[i]
            yield row
