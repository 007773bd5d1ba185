"""Labels that become known some event time after their events (verification latency).

A labelled stream replayed as it would arrive when each label is known ``delay``
after its event: :func:`delay_labels` turns a stream of ``(batch, watermark after,
dead letters)`` chunks into one whose batches carry no labels, and whose labels
follow as label-only batches (:func:`model.batch.label_batch`) right after the piece
of the stream by which the source's watermark has passed each event's time plus the
delay. Chunks are cut into pieces of at most ``span`` of event time (each with the
watermark it would have then), so that a label never arrives more than ``span`` after
it was due. Pure Arrow and numpy, no Beam: the replay source (``transforms.io.replay``)
plays the result back as one stream, events and labels interleaved as they would
arrive live.

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


def delay_labels(chunks: Iterable[Chunk], delay_us: int, span_us: int) -> Iterator[Chunk]:
    """``chunks`` with every label held back until the watermark passes its event's
    time plus ``delay_us``; those still held at the end follow the last chunk."""
    if delay_us < 0 or span_us <= 0:
        msg = f"need a label delay >= 0 and a span > 0, got {delay_us!r}, {span_us!r} us"
        raise ValueError(msg)
    # held labels, a heap of (earliest time due, arrival order, labels): a release
    # takes the pieces that have come due, not every held label
    waiting: list[tuple[int, int, pa.RecordBatch]] = []
    arrivals = itertools.count()
    watermark = None

    def hold(labels: pa.RecordBatch) -> None:
        due = int(mb.event_times_us(labels).min()) + delay_us
        heapq.heappush(waiting, (due, next(arrivals), labels))

    def release(now: int) -> Iterator[Chunk]:
        """The held labels due at watermark ``now``, as one batch."""
        out = []
        while waiting and waiting[0][0] <= now:
            _, _, held = heapq.heappop(waiting)
            due = mb.event_times_us(held) + delay_us <= now
            out.append(held if due.all() else mb.take(held, np.flatnonzero(due)))
            if not due.all():
                hold(mb.take(held, np.flatnonzero(~due)))
        if out:
            yield mb.concat(out), now, []

    for batch, chunk_watermark, dead in chunks:
        if batch is None or not batch.num_rows or mb.labels_numpy(batch) is None:
            watermark = chunk_watermark if watermark is None else max(watermark, chunk_watermark)
            yield batch, chunk_watermark, dead
            yield from release(watermark)  # labels come due on any chunk's watermark
            continue
        for i, (piece, piece_watermark) in enumerate(_pieces(batch, chunk_watermark, span_us)):
            watermark = piece_watermark if watermark is None else max(watermark, piece_watermark)
            hold(mb.label_batch(piece))
            yield mb.without_labels(piece), watermark, dead if i == 0 else []
            yield from release(watermark)
    for _, _, held in sorted(waiting, key=lambda item: item[1]):  # in arrival order
        assert watermark is not None
        yield held, watermark, []
