"""A local Kafka broker for live runs and tests, and what is done with it.

``python -m runners.kafka start|stop|status|create-topic|produce`` (see
:mod:`runners.kafka.__main__`): :class:`LocalBroker` assembles Apache Kafka (KRaft)
from Maven Central, cached outside the checkout, and runs it on 127.0.0.1, started and
stopped by PID; :mod:`runners.kafka.client` creates topics and feeds them.
"""

from __future__ import annotations

from model.streams.topics import TopicError, end_offsets, head, partitions_of
from runners.kafka.broker import KAFKA_VERSION, KafkaUnavailable, LocalBroker, install
from runners.kafka.client import Produced, create_topic, produce, rows_of_batches

__all__ = [
    "KAFKA_VERSION",
    "KafkaUnavailable",
    "LocalBroker",
    "Produced",
    "TopicError",
    "create_topic",
    "end_offsets",
    "head",
    "install",
    "partitions_of",
    "produce",
    "rows_of_batches",
]
