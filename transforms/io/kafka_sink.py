"""Predictions to a Kafka topic, one transaction a bundle, each record keyed by its event.

:class:`WriteKafka` sends every row of the micro-batches it is given as one JSON record
(the row's columns, times as ISO 8601 UTC, as the JSONL files have them) whose key is
the row's ``event_id``, with Kafka's Python client (``confluent-kafka``: idempotent,
transactional producer). The guarantee, on every runner:

- **a bundle is all or nothing**: its records are produced in one transaction,
  committed when the bundle finishes (on Flink with checkpointing, before the
  checkpoint: :mod:`runners.flink` finishes each bundle at a checkpoint). A consumer
  with ``isolation.level=read_committed`` never sees a record of a bundle that failed;
  a failed bundle's open transaction is aborted when its writer starts the next, or by
  the broker after ``transaction_timeout_ms`` when its worker died;
- **each event once, by key**: a bundle that the runner replays after it committed (a
  failure between the commit and the checkpoint that covers it) is sent again with the
  same keys and the same values, since the replay restores the state the first
  attempt started from. The log then holds that event twice, identically; the last
  value per ``event_id`` (a compacted topic, or :func:`model.streams.topics.read_keyed`)
  is each event exactly once. Beam's Python SDK gives a DoFn no hook at checkpoint
  completion, so a commit cannot wait for it (Flink's two-phase-commit sinks do).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import apache_beam as beam
import pyarrow as pa

from model import batch as mb
from model.streams.topics import QUIET
from model.vocabulary import NAMESPACE
from transforms.io.sinks import batch_to_json_lines


def keyed_records(batch: pa.RecordBatch) -> tuple[list[bytes], list[bytes]]:
    """Each row of ``batch`` as a JSON record, keyed by its ``event_id``."""
    lines = batch_to_json_lines(mb.plain_keys(batch)).splitlines()
    keys = [str(i).encode() for i in batch.column(mb.EVENT_ID).to_pylist()]
    return keys, lines


class _WriteKafkaDoFn(beam.DoFn):
    def __init__(
        self, bootstrap: str, topic: str, counter: str, transaction_timeout_ms: int
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._counter_name = counter
        self._timeout_ms = transaction_timeout_ms

    def setup(self) -> None:
        from confluent_kafka import Producer

        self._rows = beam.metrics.Metrics.counter(NAMESPACE, self._counter_name)
        self._producer = Producer(
            {
                "bootstrap.servers": self._bootstrap,
                "enable.idempotence": True,
                # one id a writer instance: a writer that died leaves an open
                # transaction, which the broker aborts after the timeout
                "transactional.id": f"sml-{self._topic}-{uuid.uuid4().hex}",
                "transaction.timeout.ms": self._timeout_ms,
                "linger.ms": 5,
            }
            | QUIET
        )
        self._producer.init_transactions(30)
        self._open = False

    def start_bundle(self) -> None:
        if self._open:  # the last bundle failed before it finished: none of it is seen
            self._producer.abort_transaction(30)
        self._producer.begin_transaction()
        self._open = True
        self._sent = 0

    def process(self, batch: pa.RecordBatch) -> Iterator[None]:
        keys, values = keyed_records(batch)
        produce = self._producer.produce
        for key, value in zip(keys, values, strict=True):
            try:
                produce(self._topic, value=value, key=key)
            except BufferError:  # the client's queue is full: let it send, then go on
                self._producer.poll(1.0)
                produce(self._topic, value=value, key=key)
        self._producer.poll(0)
        self._sent += len(keys)
        return iter(())

    def finish_bundle(self) -> None:
        self._producer.commit_transaction(60)
        self._open = False
        self._rows.inc(self._sent)

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None and self._open:
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
        transaction_timeout_ms: int = 60_000,
    ) -> None:
        super().__init__()
        self._fn = _WriteKafkaDoFn(bootstrap, topic, counter, transaction_timeout_ms)

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "WriteKafka" >> beam.ParDo(self._fn)
