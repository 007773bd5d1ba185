"""Labels that become known some event time after their events (verification latency).

A stream replayed as it would arrive when each label is known later than its event,
either a fixed ``delay`` after it (:func:`delay_labels`: the stream's own labels held
back) or at the times a labels file gives (:func:`merge_labels`). Either way the
events carry no labels, and the labels follow as label-only batches
(:func:`model.batch.label_batch`, with a ``label_time`` column: when each became
known) right after the piece of the stream by which the source's watermark has passed
each label's time. Chunks are cut into pieces of at most ``span`` of event time (each
with the watermark it would have then), so that a label arrives by the end of the
piece after the one it came due in: about ``span`` after it was due. Pure Arrow and
numpy, no Beam: the replay source (``transforms.io.replay``) plays the result back as
one stream, events and labels interleaved as they would arrive live.

>>> import numpy as np
>>> from model import batch as mb
>>> b = mb.make_batch(["k"] * 4, np.arange(4) * 10, np.zeros((4, 1)), labels=[0, 1, 0, 1],
...                   event_ids=range(4))
>>> out = list(delay_labels([(b.slice(0, 2), 10, []), (b.slice(2, 2), 30, [])], 15, 100))
>>> [(mb.is_label_batch(x), x.num_rows, w) for x, w, _ in out]
[(False, 2, 10), (False, 2, 30), (True, 2, 30), (True, 2, 30)]
>>> out = list(delay_labels([(b, 30, [])], 5, 10))  # pieces of 10: labels in between
>>> ["labels" if mb.is_label_batch(x) else f"to {w}" for x, w, _ in out]
['to 0', 'to 10', 'labels', 'to 20', 'labels', 'to 30', 'labels', 'labels']
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa

from model import batch as mb
from model.vocabulary import DeadLetter

Chunk = tuple[pa.RecordBatch | None, int, list[DeadLetter]]


def _pieces(
    batch: pa.RecordBatch, watermark_us: int, span_us: int
) -> list[tuple[pa.RecordBatch, int]]:
    """``batch`` in event-time order, cut into pieces of at most ``span_us``, each with
    the watermark after it: as far behind its newest event as the chunk's watermark is
    behind the chunk's newest (the source's lag), never past the chunk's."""
    ordered = mb.sort_by_time(batch)
    times = mb.event_times_us(ordered)
    if times[-1] - times[0] <= span_us:
        return [(batch, watermark_us)]
    lag = max(0, int(times[-1]) - watermark_us)
    bins = (times - times[0]) // span_us
    starts = [0, *(np.flatnonzero(np.diff(bins)) + 1).tolist()]
    ends = [*starts[1:], len(times)]
    return [
        (ordered.slice(a, b - a), min(watermark_us, int(times[b - 1]) - lag))
        for a, b in zip(starts, ends, strict=True)
    ]


class _Held:
    """Labels not yet known, a heap of (earliest label time, arrival order, labels): a
    release takes the pieces that have come due, not every held label."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, pa.RecordBatch]] = []
        self._arrivals = itertools.count()

    def hold(self, labels: pa.RecordBatch) -> None:
        if labels.num_rows:
            due = int(mb.label_times_us(labels).min())
            heapq.heappush(self._heap, (due, next(self._arrivals), labels))

    def release(self, now: int) -> Iterator[Chunk]:
        """The held labels known by watermark ``now``, as one batch."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            _, _, held = heapq.heappop(self._heap)
            due = mb.label_times_us(held) <= now
            out.append(held if due.all() else mb.take(held, np.flatnonzero(due)))
            if not due.all():
                self.hold(mb.take(held, np.flatnonzero(~due)))
        if out:
            yield mb.concat(out), now, []

    def rest(self, now: int) -> Iterator[Chunk]:
        """Every label still held, in the order they became known."""
        while self._heap:
            yield heapq.heappop(self._heap)[2], now, []


def _hand_on(
    chunks: Iterable[Chunk], held: _Held, span_us: int, delay_us: int | None
) -> Iterator[Chunk]:
    """``chunks`` in pieces of ``span_us``, each followed by the held labels known by
    then; with ``delay_us``, each piece's own labels held back that long."""
    watermark = None
    for batch, chunk_watermark, dead in chunks:
        if batch is None or not batch.num_rows:
            watermark = chunk_watermark if watermark is None else max(watermark, chunk_watermark)
            yield batch, chunk_watermark, dead
            yield from held.release(watermark)  # labels come due on any chunk's watermark
            continue
        for i, (piece, piece_watermark) in enumerate(_pieces(batch, chunk_watermark, span_us)):
            watermark = piece_watermark if watermark is None else max(watermark, piece_watermark)
            if delay_us is not None and mb.labels_numpy(piece) is not None:
                held.hold(mb.label_batch(piece, delay_us))
                piece = mb.without_labels(piece)
            yield piece, watermark, dead if i == 0 else []
            yield from held.release(watermark)
    yield from held.rest(mb.NO_WATERMARK if watermark is None else watermark)


def _check_span(span_us: int) -> None:
    if span_us <= 0:
        msg = f"need a span > 0, got {span_us!r} us"
        raise ValueError(msg)


def delay_labels(chunks: Iterable[Chunk], delay_us: int, span_us: int) -> Iterator[Chunk]:
    """``chunks`` with every label held back until the watermark passes its event's
    time plus ``delay_us``; those still held at the end follow the last chunk."""
    if delay_us < 0:
        msg = f"need a label delay >= 0, got {delay_us!r} us"
        raise ValueError(msg)
    _check_span(span_us)
    return _hand_on(chunks, _Held(), span_us, delay_us)


def merge_labels(
    chunks: Iterable[Chunk], labels: Iterable[pa.RecordBatch], span_us: int
) -> Iterator[Chunk]:
    """``chunks`` (events) with the label-only batches ``labels`` (each with its
    ``label_time``, as :mod:`model.streams.label_file` reads them) handed on once the
    watermark passes their label time; those still unknown at the end follow the last
    chunk."""
    _check_span(span_us)
    held = _Held()
    for batch in labels:
        if not batch.num_rows:
            continue
        ordered = mb.take(batch, np.argsort(mb.label_times_us(batch), kind="stable"))
        times = mb.label_times_us(ordered)
        bins = (times - times[0]) // span_us  # held in pieces: a release splits one at most
        starts = [0, *(np.flatnonzero(np.diff(bins)) + 1).tolist()]
        for a, b in zip(starts, [*starts[1:], len(times)], strict=True):
            held.hold(ordered.slice(a, b - a))
    return _hand_on(chunks, held, span_us, None)
