"""Predictions to a Kafka topic, one transaction a bundle, each record keyed by its event.

:class:`WriteKafka` sends every row of the micro-batches it is given as one JSON record
(the row's columns, times as ISO 8601 UTC, as the JSONL files have them) whose key is
the row's ``[key, event_id]``, with Kafka's Python client (``confluent-kafka``: idempotent,
transactional producer). The guarantee, on every runner:

- **a bundle is all or nothing**: its records are produced in one transaction,
  committed when the bundle finishes (on Flink with checkpointing, before the
  checkpoint: :mod:`runners.flink` finishes each bundle at a checkpoint). A consumer
  with ``isolation.level=read_committed`` never sees a record of a bundle that failed:
  the runner's teardown of its DoFn aborts the transaction, or, where the worker died,
  the broker does after ``transaction_timeout_ms`` (until then such a consumer waits
  at that point);
- **each event once, by key**: a bundle that the runner replays after it committed (a
  failure between the commit and the checkpoint that covers it) is sent again with the
  same keys and the same values, since the replay restores the state the first
  attempt started from. The log then holds that event twice, identically; the last
  value per record key (a compacted topic, or :func:`model.streams.topics.read_keyed`)
  is each event exactly once. Beam's Python SDK gives a DoFn no hook at checkpoint
  completion, so a commit cannot wait for it (Flink's two-phase-commit sinks do).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pyarrow as pa

from model import batch as mb
from model.streams.topics import QUIET
from model.vocabulary import NAMESPACE
from transforms.io.sinks import batch_to_json_lines


def keyed_records(batch: pa.RecordBatch) -> tuple[list[bytes], list[bytes]]:
    """Each row of ``batch`` as a JSON record, keyed by its event: ``[key, event_id]``
    (an id alone may repeat across keys, e.g. line numbers of several files)."""
    plain = mb.plain_keys(batch)
    lines = batch_to_json_lines(plain).splitlines()
    ids = zip(plain.column(mb.KEY).to_pylist(), plain.column(mb.EVENT_ID).to_pylist(), strict=True)
    return [json.dumps([k, i]).encode() for k, i in ids], lines


# Producers with no open transaction, by (bootstrap, topic, timeout): a runner that
# makes a DoFn a bundle (the streaming DirectRunner) does not pay a producer and its
# transactional set-up each time. A bundle takes one and gives it back committed; one
# whose bundle failed is never given back (the broker aborts its transaction).
_IDLE: dict[tuple[str, str, int], list[Any]] = {}
_IDLE_LOCK = threading.Lock()


def _producer(bootstrap: str, topic: str, timeout_ms: int) -> Any:
    with _IDLE_LOCK:
        idle = _IDLE.get((bootstrap, topic, timeout_ms))
        if idle:
            return idle.pop()
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            # one id a producer: a producer whose bundle failed leaves an open
            # transaction, which the broker aborts after the timeout
            "transactional.id": f"sml-{topic}-{uuid.uuid4().hex}",
            "transaction.timeout.ms": timeout_ms,
            "linger.ms": 5,
        }
        | QUIET
    )
    producer.init_transactions(30)
    return producer


def _give_back(key: tuple[str, str, int], producer: Any) -> None:
    with _IDLE_LOCK:
        _IDLE.setdefault(key, []).append(producer)


def _commit(producer: Any) -> None:
    """Commit the open transaction: retried while Kafka says a retry may succeed;
    otherwise aborted where it can be (the bundle fails, and the runner retries it)."""
    from confluent_kafka import KafkaException

    for attempt in range(5):
        try:
            producer.commit_transaction(60)
            return
        except KafkaException as err:
            error = err.args[0]
            if error.retriable() and attempt < 4:
                continue
            if error.txn_requires_abort():
                producer.abort_transaction(30)
            raise


class _WriteKafkaDoFn(beam.DoFn):
    def __init__(
        self, bootstrap: str, topic: str, counter: str, transaction_timeout_ms: int
    ) -> None:
        self._key = (bootstrap, topic, transaction_timeout_ms)
        self._topic = topic
        self._counter_name = counter

    def setup(self) -> None:
        self._rows = beam.metrics.Metrics.counter(NAMESPACE, self._counter_name)
        self._producer: Any = None

    def start_bundle(self) -> None:
        self._producer = _producer(*self._key)
        self._producer.begin_transaction()
        self._sent = 0

    def process(self, batch: pa.RecordBatch) -> Iterator[None]:
        keys, values = keyed_records(batch)
        producer = self._producer
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    producer.produce(self._topic, value=value, key=key)
                    break
                except BufferError:  # the client's queue is full: let it send
                    producer.poll(0.1)
        producer.poll(0)
        self._sent += len(keys)
        return iter(())

    def finish_bundle(self) -> None:
        producer, self._producer = self._producer, None
        _commit(producer)
        _give_back(self._key, producer)
        self._rows.inc(self._sent)

    def teardown(self) -> None:
        # a bundle failed (the runner discards this DoFn): abort its transaction now,
        # not after the broker's timeout, so read_committed consumers need not wait
        producer, self._producer = getattr(self, "_producer", None), None
        if producer is not None:
            producer.abort_transaction(10)


class WriteKafka(beam.PTransform):
    """Write micro-batches' rows to ``topic`` at ``bootstrap``: one record a row, keyed
    by ``event_id``, one transaction a bundle (see the module's guarantee); the
    ``counter`` counts the rows committed."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        counter: str,
        transaction_timeout_ms: int = 15_000,
    ) -> None:
        super().__init__()
        self._fn = _WriteKafkaDoFn(bootstrap, topic, counter, transaction_timeout_ms)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "WriteKafka" >> beam.ParDo(self._fn)
