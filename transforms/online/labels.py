"""Labels that arrive later than their events, joined in event time.

Events are micro-batches (``key``, ``event_time``, ``event_id``, features); labels
are micro-batches of ``key``, ``event_time`` (the event's time), ``event_id`` and
``label``, arriving whenever the label becomes known. :class:`JoinLabels` pairs them
by ``event_id`` in one stateful step per key:

- a label (or event) that finds its partner is emitted at once as a labelled event;
- unmatched ones wait in Beam state until the watermark passes their window end plus
  ``allowed_lateness_s``; events still unlabelled then are simply not trained on
  (counted as ``events_unlabelled``); labels still unmatched go to the dead-letter
  output ("label for an unknown event");
- labels arriving after that horizon are set aside by the windowing gate upstream
  with reason "late" (see :mod:`transforms.window.lateness`), so every label is either
  joined or dead-lettered with a reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.coders import BytesCoder, VarIntCoder
from apache_beam.transforms import window as bw
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.utils.timestamp import Timestamp

from model import batch as mb
from model.batch import decode_batch, encode_batch
from model.online.config import WindowGrid
from model.vocabulary import NAMESPACE, DeadLetter, Metric, Stage
from transforms.window.spec import TriggerSpec, WindowSpec
from transforms.window.windowing import EventTimeWindow

_EVENT, _LABEL = b"E", b"L"
UNMATCHED_REASON = (
    "label for an unknown event (no event with this event_id arrived within the allowed lateness)"
)
_WAITING = BagStateSpec("waiting", BytesCoder())
_CLEAN_AT = ReadModifyWriteStateSpec("clean_at", VarIntCoder())
_CLEANUP = TimerSpec("cleanup", TimeDomain.WATERMARK)
WAITING = beam.DoFn.StateParam(_WAITING)
CLEAN_AT = beam.DoFn.StateParam(_CLEAN_AT)
CLEANUP = beam.DoFn.TimerParam(_CLEANUP)


def attach_labels(
    events: pa.RecordBatch, labels: pa.RecordBatch
) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
    """Events that have a label (with the label column set), and the masks of matched
    events and matched labels."""
    event_ids = events.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
    label_ids = labels.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
    order = np.argsort(label_ids, kind="stable")
    pos = np.searchsorted(label_ids[order], event_ids)
    pos = np.minimum(pos, len(label_ids) - 1)
    event_hit = (
        label_ids[order][pos] == event_ids if len(label_ids) else np.zeros(len(event_ids), bool)
    )
    label_hit = np.isin(label_ids, event_ids[event_hit])
    matched = mb.take(events, np.flatnonzero(event_hit))
    values = labels.column(mb.LABEL).to_numpy(zero_copy_only=False)[order][pos[event_hit]]
    if mb.LABEL in matched.schema.names:
        matched = matched.drop_columns([mb.LABEL])
    matched = matched.append_column(mb.LABEL, pa.array(values, type=pa.int64()))
    return matched, event_hit, label_hit


class _JoinDoFn(beam.DoFn):
    def __init__(self, window_us: int, lateness_us: int) -> None:
        self._grid = WindowGrid(size_us=window_us)
        self._lateness_us = lateness_us

    def setup(self) -> None:
        self._unlabelled = beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_UNLABELLED)
        self._joined = beam.metrics.Metrics.counter(NAMESPACE, Metric.LABELS_JOINED)

    def process(
        self,
        kv: tuple[str, tuple[bytes, pa.RecordBatch]],
        waiting: Any = WAITING,
        clean_at: Any = CLEAN_AT,
        timer: Any = CLEANUP,
    ) -> Iterator[Any]:
        _, (kind, batch) = kv
        partner_kind = _LABEL if kind == _EVENT else _EVENT
        stored = [(d[:1], decode_batch(d[1:])) for d in waiting.read()]
        partners = [b for k, b in stored if k == partner_kind]
        remaining = batch
        if partners:
            pool = mb.concat(partners)
            events, labels = (batch, pool) if kind == _EVENT else (pool, batch)
            matched, event_hit, label_hit = attach_labels(events, labels)
            if matched.num_rows:
                self._joined.inc(matched.num_rows)
                yield matched
            mine, theirs = (event_hit, label_hit) if kind == _EVENT else (label_hit, event_hit)
            remaining = mb.take(batch, np.flatnonzero(~mine))
            left = mb.take(pool, np.flatnonzero(~theirs))
            waiting.clear()
            for k, b in stored:
                if k != partner_kind:
                    waiting.add(k + encode_batch(b))
            if left.num_rows:
                waiting.add(partner_kind + encode_batch(left))
        if remaining.num_rows:
            waiting.add(kind + encode_batch(remaining))
            due = self._expiry(remaining)
            current = clean_at.read()
            if current is None or due < current:
                clean_at.write(due)
                timer.set(Timestamp(micros=due))

    def _expiry(self, batch: pa.RecordBatch) -> int:
        """When the newest event of ``batch`` can no longer be joined."""
        newest = int(mb.event_times_us(batch).max())
        return self._grid.end_of(newest) + self._lateness_us

    @on_timer(_CLEANUP)
    def cleanup(
        self, waiting: Any = WAITING, clean_at: Any = CLEAN_AT, timer: Any = CLEANUP
    ) -> Iterator[Any]:
        fired = clean_at.read()
        stored = [(d[:1], decode_batch(d[1:])) for d in waiting.read()]
        waiting.clear()
        keep = [(k, b) for k, b in stored if self._expiry(b) > fired]
        for kind, batch in keep:
            waiting.add(kind + encode_batch(batch))
        if keep:
            nxt = min(self._expiry(b) for _, b in keep)
            clean_at.write(nxt)
            timer.set(Timestamp(micros=nxt))
        else:
            clean_at.clear()
        for kind, batch in stored:
            if self._expiry(batch) > fired:
                continue
            if kind == _EVENT:
                self._unlabelled.inc(batch.num_rows)
                continue
            yield beam.pvalue.TaggedOutput(
                "unmatched",
                DeadLetter(
                    UNMATCHED_REASON,
                    Stage.LABELS,
                    rows=batch.num_rows,
                    payload={"event_ids": batch.column(mb.EVENT_ID).to_pylist()},
                ),
            )


def _tagged(batch: pa.RecordBatch, kind: bytes) -> Iterator[tuple[str, tuple[bytes, Any]]]:
    return ((key, (kind, part)) for key, part in mb.split_by_key(batch))


@dataclass(frozen=True)
class JoinOut:
    """``labelled``: events with their labels; ``dead_letter``: labels that arrived too
    late or never found their event, with the reason."""

    labelled: beam.PCollection
    dead_letter: beam.PCollection


class JoinLabels(beam.PTransform):
    """Join a stream of label batches to the event batches, by ``event_id``."""

    def __init__(
        self, labels: beam.PCollection, *, window_s: float, allowed_lateness_s: float
    ) -> None:
        super().__init__()
        self._labels = labels
        self._window = WindowSpec("fixed", size_s=window_s)
        self._trigger = TriggerSpec(allowed_lateness_s=allowed_lateness_s)
        window_us = round(window_s * 1_000_000)
        self._fn = _JoinDoFn(window_us, round(allowed_lateness_s * 1_000_000))

    def expand(self, events: beam.PCollection) -> JoinOut:
        gated = self._labels | "GateLateLabels" >> EventTimeWindow(self._window, self._trigger)
        tagged_events = events | "TagEvents" >> beam.FlatMap(_tagged, _EVENT)
        tagged_labels = gated.batches | "TagLabels" >> beam.FlatMap(_tagged, _LABEL)
        joined = (
            (tagged_events, tagged_labels)
            | "Both" >> beam.Flatten()
            | "GlobalWindow" >> beam.WindowInto(bw.GlobalWindows())
            | "Join"
            >> beam.ParDo(self._fn)
            .with_output_types(pa.RecordBatch, unmatched=DeadLetter)
            .with_outputs("unmatched", main="labelled")
        )
        dead = (gated.dropped, joined.unmatched) | "LabelDeadLetters" >> beam.Flatten()
        return JoinOut(labelled=joined.labelled, dead_letter=dead)
