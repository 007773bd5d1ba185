"""Labels that arrive later than their events, joined in event time.

Events are micro-batches (``key``, ``event_time``, ``event_id``, features); labels
are micro-batches of ``key``, ``event_time`` (the event's time), ``event_id`` and
``label``, arriving whenever the label becomes known. :class:`JoinLabels` pairs them
by ``event_id`` in one stateful step per key:

- a label (or event) that finds its partner is emitted at once as a labelled event;
  a second label for an event goes to the dead-letter output ("duplicate label"),
  whether it comes with the first or after the event was joined;
- unmatched ones wait in Beam state until the watermark passes their window end plus
  ``allowed_lateness_s``; events still unlabelled then are simply not trained on
  (the ``unlabelled`` output; whoever writes it counts them); labels still unmatched
  go to the dead-letter output ("label for an unknown event");
- labels arriving after that horizon (judged on the source watermark they carry, as
  :mod:`transforms.window.lateness` judges events) are set aside with reason "late",
  so every label is either joined or dead-lettered with a reason.

Labels keep the timestamps they arrive with (a label known now is on time now,
whatever its event time): re-stamped to their event time, they would be late data,
which holds no watermark, and the join could give up on their events before they
came.
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
from model.vocabulary import DeadLetter, Stage
from transforms.window.lateness import dead_letter

_EVENT, _LABEL = b"E", b"L"
UNMATCHED_REASON = (
    "label for an unknown event (no event with this event_id arrived within the allowed lateness)"
)
DUPLICATE_REASON = "duplicate label (the event took the first label given for its event_id)"
# what waits, one bag per kind: an element reads only its partners' bag, and rewrites
# it as one batch (so each arrival costs one decode and one encode, however many wait)
_EVENTS = BagStateSpec("events", BytesCoder())
_LABELS = BagStateSpec("labels", BytesCoder())
# the events joined already (key, time, id: until they expire), so that a second label
# for one is set aside as a duplicate, whenever it comes
_JOINED = BagStateSpec("joined", BytesCoder())
_CLEAN_AT = ReadModifyWriteStateSpec("clean_at", VarIntCoder())
_CLEANUP = TimerSpec("cleanup", TimeDomain.WATERMARK)
EVENTS = beam.DoFn.StateParam(_EVENTS)
LABELS = beam.DoFn.StateParam(_LABELS)
JOINED = beam.DoFn.StateParam(_JOINED)
CLEAN_AT = beam.DoFn.StateParam(_CLEAN_AT)
CLEANUP = beam.DoFn.TimerParam(_CLEANUP)


def attach_labels(
    events: pa.RecordBatch, labels: pa.RecordBatch
) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray, np.ndarray]:
    """Events that have a label (with the label column set), the masks of matched
    events and of the labels they took, and the mask of the other labels for those
    events (duplicates: an event takes the first of its labels)."""
    event_ids = events.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
    label_ids = labels.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
    order = np.argsort(label_ids, kind="stable")
    pos = np.searchsorted(label_ids[order], event_ids)
    pos = np.minimum(pos, len(label_ids) - 1)
    event_hit = (
        label_ids[order][pos] == event_ids if len(label_ids) else np.zeros(len(event_ids), bool)
    )
    label_hit = np.zeros(len(label_ids), bool)
    label_hit[order[pos[event_hit]]] = True
    duplicate = np.isin(label_ids, event_ids[event_hit]) & ~label_hit
    matched = mb.take(events, np.flatnonzero(event_hit))
    taken = order[pos[event_hit]]  # the label each matched event takes
    values = labels.column(mb.LABEL).to_numpy(zero_copy_only=False)[taken]
    matched = matched.drop_columns(
        [c for c in (mb.LABEL, mb.LABEL_TIME) if c in matched.schema.names]
    )
    matched = matched.append_column(mb.LABEL, pa.array(values, type=pa.int64()))
    if mb.LABEL_TIME in labels.schema.names:  # when it was known, to learn it no earlier
        known = mb.times_array(mb.label_times_us(labels)[taken])
        matched = matched.append_column(pa.field(mb.LABEL_TIME, mb.EVENT_TIME_TYPE), known)
    return matched, event_hit, label_hit, duplicate


@dataclass(frozen=True)
class Expiry:
    """When a row can no longer be joined: the end of its window (``window_us`` long,
    starting at ``offset_us`` modulo the size) plus ``lateness_us``."""

    window_us: int
    lateness_us: int
    offset_us: int = 0

    def of(self, batch: pa.RecordBatch) -> np.ndarray:
        """Each row's expiry (microseconds)."""
        starts = mb.window_start_us(mb.event_times_us(batch), self.window_us, self.offset_us)
        return starts + self.window_us + self.lateness_us


class _JoinDoFn(beam.DoFn):
    def __init__(self, expiry: Expiry, *, timely: bool = True) -> None:
        self._expiry = expiry
        # timely: the cleanup timer at the earliest expiry waiting (each row leaves
        # when it expires); else at the latest (all leave at once: a bounded run,
        # whose watermark moves once, at its end, takes one firing, not one a frame)
        self._pick = min if timely else max

    def process(
        self,
        kv: tuple[str, tuple[bytes, pa.RecordBatch]],
        events: Any = EVENTS,
        labels: Any = LABELS,
        joined: Any = JOINED,
        clean_at: Any = CLEAN_AT,
        timer: Any = CLEANUP,
    ) -> Iterator[Any]:
        _, (kind, batch) = kv
        own, partners = (events, labels) if kind == _EVENT else (labels, events)
        stored = [decode_batch(d) for d in partners.read()]
        remaining = batch
        if stored:
            pool = mb.concat(stored)
            pair = (batch, pool) if kind == _EVENT else (pool, batch)
            matched, event_hit, label_hit, duplicate = attach_labels(*pair)
            if matched.num_rows:
                yield matched
                joined.add(encode_batch(matched.select([mb.KEY, mb.EVENT_TIME, mb.EVENT_ID])))
                self._clean_by(self._expiry.of(matched), clean_at, timer)
            if duplicate.any():
                labels_in = batch if kind == _LABEL else pool
                yield _set_aside(DUPLICATE_REASON, mb.take(labels_in, np.flatnonzero(duplicate)))
                label_hit = label_hit | duplicate  # set aside: neither kept nor joined
            mine, theirs = (event_hit, label_hit) if kind == _EVENT else (label_hit, event_hit)
            remaining = mb.take(batch, np.flatnonzero(~mine))
            if theirs.any() or len(stored) > 1:  # rewritten as one batch
                partners.clear()
                left = mb.take(pool, np.flatnonzero(~theirs))
                if left.num_rows:
                    partners.add(encode_batch(left))
        if kind == _LABEL and remaining.num_rows:  # labels for events joined already?
            stored_ids = [decode_batch(d) for d in joined.read()]
            if len(stored_ids) > 1:  # kept as one batch: the next read decodes one
                joined.clear()
                joined.add(encode_batch(mb.concat(stored_ids)))
            done = [b.column(mb.EVENT_ID) for b in stored_ids]
            if done:
                ids = remaining.column(mb.EVENT_ID).to_numpy(zero_copy_only=False)
                again = np.isin(ids, pa.chunked_array(done).to_numpy())
                if again.any():
                    yield _set_aside(DUPLICATE_REASON, mb.take(remaining, np.flatnonzero(again)))
                    remaining = mb.take(remaining, np.flatnonzero(~again))
        if remaining.num_rows:
            own.add(encode_batch(remaining))
            self._clean_by(self._expiry.of(remaining), clean_at, timer)

    def _clean_by(self, expiry: np.ndarray, clean_at: Any, timer: Any) -> None:
        """The cleanup timer set for rows that expire at ``expiry`` (see ``timely``)."""
        current = clean_at.read()
        due = int(self._pick(expiry))
        due = due if current is None else self._pick(current, due)
        if due != current:
            clean_at.write(due)
            timer.set(Timestamp(micros=due))

    @on_timer(_CLEANUP)
    def cleanup(
        self,
        events: Any = EVENTS,
        labels: Any = LABELS,
        joined: Any = JOINED,
        clean_at: Any = CLEAN_AT,
        timer: Any = CLEANUP,
    ) -> Iterator[Any]:
        fired = clean_at.read()
        nxt = None
        for kind, bag in ((_EVENT, events), (_LABEL, labels), (None, joined)):
            stored = [decode_batch(d) for d in bag.read()]
            if not stored:
                continue
            pool = mb.concat(stored)
            expiry = self._expiry.of(pool)
            gone = expiry <= fired
            if not gone.all():
                due = int(self._pick(expiry[~gone]))
                nxt = due if nxt is None else self._pick(nxt, due)
            if not gone.any():
                continue
            bag.clear()
            if not gone.all():
                bag.add(encode_batch(mb.take(pool, np.flatnonzero(~gone))))
            if kind is not None:  # the joined ones are simply forgotten
                yield self._expired(kind, mb.take(pool, np.flatnonzero(gone)))
        if nxt is None:
            clean_at.clear()
        else:
            clean_at.write(nxt)
            timer.set(Timestamp(micros=nxt))

    def _expired(self, kind: bytes, batch: pa.RecordBatch) -> beam.pvalue.TaggedOutput:
        if kind == _EVENT:  # counted where written (pipelines.classify: events_unlabelled)
            return beam.pvalue.TaggedOutput("unlabelled", unlabelled_record(batch))
        return _set_aside(UNMATCHED_REASON, batch)


def _set_aside(reason: str, labels: pa.RecordBatch) -> beam.pvalue.TaggedOutput:
    """Labels that will never be joined, as one dead letter naming their events."""
    event_ids = labels.column(mb.EVENT_ID).to_pylist()
    record = DeadLetter(
        reason, Stage.LABELS, rows=labels.num_rows, payload={"event_ids": event_ids}
    )
    return beam.pvalue.TaggedOutput("unmatched", record)


class _LateLabelsDoFn(beam.DoFn):
    """Labels whose events can no longer be joined (the source's watermark they
    carry is past their expiry) to the dead letters; the rest on, timestamps kept."""

    def __init__(self, expiry: Expiry) -> None:
        self._expiry = expiry

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        watermark = mb.watermark_of(batch)
        if watermark is None:
            yield batch
            return
        # at its expiry the join may have let the event go already: late from there on
        expired = watermark >= self._expiry.of(batch)
        if expired.any():
            late = mb.take(batch, np.flatnonzero(expired))
            record = dead_letter(late, watermark, self._expiry.lateness_us, Stage.LABELS)
            yield beam.pvalue.TaggedOutput("late", record)
            batch = mb.take(batch, np.flatnonzero(~expired))
        if batch.num_rows:
            yield batch


def unlabelled_record(batch: pa.RecordBatch) -> dict[str, Any]:
    """What is written of events whose label never came: how many, and which."""
    times = mb.event_times_us(batch)
    return {
        "rows": batch.num_rows,
        "event_ids": batch.column(mb.EVENT_ID).to_pylist(),
        "min_event_time_us": int(times.min()),
        "max_event_time_us": int(times.max()),
    }


_Tagged = beam.typehints.Tuple[str, beam.typehints.Any]


def _tagged(batch: pa.RecordBatch, kind: bytes) -> Iterator[tuple[str, tuple[bytes, Any]]]:
    return ((key, (kind, part)) for key, part in mb.split_by_key(batch))


@dataclass(frozen=True)
class JoinOut:
    """``labelled``: events with their labels; ``dead_letter``: labels that arrived too
    late or never found their event, with the reason; ``unlabelled``: a record
    (:func:`unlabelled_record`) for the events whose label never came."""

    labelled: beam.PCollection
    dead_letter: beam.PCollection
    unlabelled: beam.PCollection


class JoinLabels(beam.PTransform):
    """Join a stream of label batches to the event batches, by ``event_id``.

    ``window_s`` (and ``offset_s``): the windows rows wait by, ``allowed_lateness_s``
    after their end; ``timely=False`` (a bounded run) lets them all go at once, at the
    latest expiry. Whoever writes its outputs counts their rows (a pipeline may join
    the same rows twice: to learn from them, and to evaluate them)."""

    def __init__(
        self,
        labels: beam.PCollection,
        *,
        window_s: float,
        allowed_lateness_s: float,
        offset_s: float = 0.0,
        timely: bool = True,
    ) -> None:
        super().__init__()
        self._labels = labels
        expiry = Expiry(
            round(window_s * 1_000_000),
            round(allowed_lateness_s * 1_000_000),
            round(offset_s * 1_000_000),
        )
        self._gate = _LateLabelsDoFn(expiry)
        self._fn = _JoinDoFn(expiry, timely=timely)

    def expand(self, events: beam.PCollection) -> JoinOut:
        gated = self._labels | "GateLateLabels" >> beam.ParDo(self._gate).with_output_types(
            pa.RecordBatch, late=DeadLetter
        ).with_outputs("late", main="labels")
        global_ = bw.GlobalWindows()
        tagged_events = (
            events
            | "EventsGlobal" >> beam.WindowInto(global_)
            | "TagEvents" >> beam.FlatMap(_tagged, _EVENT).with_output_types(_Tagged)
        )
        tagged_labels = (
            gated.labels
            | "LabelsGlobal" >> beam.WindowInto(global_)
            | "TagLabels" >> beam.FlatMap(_tagged, _LABEL).with_output_types(_Tagged)
        )
        joined = (
            (tagged_events, tagged_labels)
            | "Both" >> beam.Flatten()
            | "Join"
            >> beam.ParDo(self._fn)
            .with_output_types(pa.RecordBatch, unmatched=DeadLetter, unlabelled=dict)
            .with_outputs("unmatched", "unlabelled", main="labelled")
        )
        dead = (gated.late, joined.unmatched) | "LabelDeadLetters" >> beam.Flatten()
        return JoinOut(joined.labelled, dead, joined.unlabelled)


class _SplitLabelsDoFn(beam.DoFn):
    def __init__(self, delay_us: int | None) -> None:
        self._delay_us = delay_us

    def process(self, batch: pa.RecordBatch) -> Iterator[Any]:
        if mb.is_label_batch(batch):
            yield beam.pvalue.TaggedOutput("labels", batch)
            return
        if mb.labels_numpy(batch) is not None:
            yield beam.pvalue.TaggedOutput("labels", mb.label_batch(batch, self._delay_us))
            batch = mb.without_labels(batch)
        yield batch


@dataclass(frozen=True)
class SplitOut:
    """``events``: the batches without labels; ``labels``: label-only batches."""

    events: beam.PCollection
    labels: beam.PCollection


class SplitLabels(beam.PTransform):
    """Events apart from their labels: for a pipeline that scores events before their
    labels are known, and joins the labels later (:class:`JoinLabels`). Label-only
    batches (delayed labels from the source, :mod:`model.streams.delayed`, or a labels
    file) go to ``labels`` as they are; labelled batches are parted, their labels known
    ``delay_s`` after their events (a ``label_time`` column) when that is given."""

    def __init__(self, delay_s: float | None = None) -> None:
        super().__init__()
        self._delay_us = None if delay_s is None else round(delay_s * 1_000_000)

    def expand(self, batches: beam.PCollection) -> SplitOut:
        out = batches | "Split" >> beam.ParDo(_SplitLabelsDoFn(self._delay_us)).with_output_types(
            pa.RecordBatch, labels=pa.RecordBatch
        ).with_outputs("labels", main="events")
        return SplitOut(events=out.events, labels=out.labels)
