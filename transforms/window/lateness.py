"""Late data, accounted for.

Beam's GroupByKey silently discards elements whose windows expired (watermark past
window end + allowed lateness) before they arrived. To keep ``in = out + rejected``
our sources record the watermark in force when each micro-batch is emitted (schema
metadata ``watermark_us``); :func:`classify` applies Beam's rule to each window-aligned
piece, so expired events go to the dead-letter output with a reason instead of
vanishing, and late-but-allowed events are counted.

The runner's watermark at the grouping step never runs ahead of the source's, so a
piece judged on time or late here is never dropped later by Beam. Batches from
sources that do not record a watermark are passed through unjudged (counted as
``events_unjudged``).
"""

from __future__ import annotations

from enum import StrEnum

import apache_beam as beam
import numpy as np
import pyarrow as pa

from model import batch as mb
from model.vocabulary import NAMESPACE, DeadLetter, Metric, Stage
from transforms.window.spec import WindowSpec

LATE_REASON = "late: window expired (watermark past window end + allowed lateness)"


class Verdict(StrEnum):
    """What the lateness rule says of a piece."""

    ON_TIME = "on_time"
    LATE = "late"  # its window fired, but it is within the allowed lateness
    EXPIRED = "expired"  # every window it belongs to has expired: a dead letter
    UNJUDGED = "unjudged"  # its source records no watermark (bounded runs)


_COUNTERS = {
    Verdict.ON_TIME: beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_ON_TIME),
    Verdict.LATE: beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_LATE_ACCEPTED),
    Verdict.EXPIRED: beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_LATE_DROPPED),
    Verdict.UNJUDGED: beam.metrics.Metrics.counter(NAMESPACE, Metric.EVENTS_UNJUDGED),
}


def classify(
    spec: WindowSpec, min_us: int, max_us: int, watermark_us: int | None, lateness_us: int
) -> Verdict:
    """The verdict on a window-aligned piece whose event times span ``[min_us, max_us]``.

    Beam drops an element from a window when ``watermark > window.end + lateness``;
    a piece is EXPIRED when that holds for every window it belongs to.
    """
    if watermark_us is None:
        return Verdict.UNJUDGED
    first_end, last_end = spec.window_ends_us(min_us, max_us)
    if watermark_us > last_end + lateness_us:
        return Verdict.EXPIRED
    if watermark_us >= first_end:
        return Verdict.LATE
    return Verdict.ON_TIME


def classify_rows(
    spec: WindowSpec, piece: pa.RecordBatch, watermark_us: int, lateness_us: int
) -> np.ndarray | None:
    """A framed piece (:class:`~transforms.window.spec.FramedWindows`: several windows
    in one Beam window), each event judged by the rule above against its own window;
    counts each verdict. Returns which events expired, or None when none did."""
    ends = spec.fixed_window_ends_us(mb.event_times_us(piece))
    expired = watermark_us > ends + lateness_us
    late = int(np.count_nonzero(watermark_us >= ends)) if watermark_us >= ends.min() else 0
    gone = int(np.count_nonzero(expired)) if late else 0
    count(Verdict.EXPIRED, gone)
    count(Verdict.LATE, late - gone)
    count(Verdict.ON_TIME, piece.num_rows - late)
    return expired if gone else None


def count(verdict: Verdict, rows: int) -> None:
    _COUNTERS[verdict].inc(rows)


def dead_letter(
    piece: pa.RecordBatch, watermark_us: int | None, lateness_us: int, stage: str = Stage.WINDOWING
) -> DeadLetter:
    """The dead letter of an expired piece (one record for all its events)."""
    ids = piece.column(mb.EVENT_ID).to_pylist() if mb.EVENT_ID in piece.schema.names else []
    times = mb.event_times_us(piece)
    return DeadLetter(
        LATE_REASON,
        stage,
        rows=piece.num_rows,
        payload={
            "event_ids": ids,
            "min_event_time_us": int(times.min()),
            "max_event_time_us": int(times.max()),
            "watermark_us": watermark_us,
            "allowed_lateness_us": lateness_us,
        },
    )
