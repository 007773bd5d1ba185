"""The per-key lagged label: the class of the key's previous event, as a feature.

Real streams are autocorrelated: tomorrow's weather is often today's, the price goes
up after it went up. A learner that sees the key's previous label learns what a
"no-change" classifier knows and what the features add to it. It is a prequential
feature: in a test-then-train stream an event's label is known once the event has
been scored, so the label of the key's previous event is known when the next one
comes, and only then.

Never the row's own label nor a later one: a row's lag is the label of the key's
latest event *strictly earlier in event time* (ties share no label: events at the
same instant are scored together), among those seen so far (earlier rows of the
batch, and the key's state from earlier batches). A row older than the key's newest
event already seen (out of order) takes a lag only from earlier rows of its own
batch; the state keeps one event per key and never a label from the row's future.
An unknown lag (a key's first event, an unlabelled previous event) is all zeros.

The lag is appended to the features as a one-hot of ``num_classes`` columns.

>>> import numpy as np
>>> from model import batch as mb
>>> lag = LaggedLabels(num_classes=2)
>>> b = mb.make_batch(["a", "a", "b", "a"], [1, 2, 2, 3], np.zeros((4, 1)), labels=[1, 0, 1, 1])
>>> mb.features_numpy(lag.apply(b))[:, 1:].tolist()
[[0.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
>>> later = mb.make_batch(["b", "a"], [5, 4], np.zeros((2, 1)), labels=[0, 0])
>>> mb.features_numpy(lag.apply(later))[:, 1:].tolist()
[[0.0, 1.0], [0.0, 1.0]]
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from model import batch as mb

UNKNOWN = -1


@dataclass
class LaggedLabels:
    """Adds the lagged label to micro-batches; its state is each key's newest event
    time and label (``snapshot``/``restore`` as bytes)."""

    num_classes: int
    last: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (time, label)

    def __post_init__(self) -> None:
        if self.num_classes < 2:
            msg = f"num_classes must be >= 2, got {self.num_classes!r}"
            raise ValueError(msg)

    def lags(self, batch: pa.RecordBatch) -> np.ndarray:
        """Each row's lagged label (``UNKNOWN`` where none is known), and the state
        updated with the batch."""
        n = batch.num_rows
        out = np.full(n, UNKNOWN, dtype=np.int64)
        labels = mb.labels_numpy(batch)
        if n == 0:
            return out
        times = mb.event_times_us(batch)
        codes, keys = mb.key_codes(batch)
        known = labels if labels is not None else np.full(n, UNKNOWN, dtype=np.int64)
        # rows by key, then time, then position (the order they came in)
        order = np.lexsort((np.arange(n), times, codes))
        t, k, y = times[order], codes[order], known[order]
        # the last row of the same key strictly earlier in time: the row before the
        # first row of this row's (key, time) group
        starts = np.flatnonzero(np.r_[True, (k[1:] != k[:-1]) | (t[1:] != t[:-1])])
        group_start = starts[np.searchsorted(starts, np.arange(n), side="right") - 1]
        prev = group_start - 1
        same_key = (prev >= 0) & (k[np.maximum(prev, 0)] == k)
        lag = np.where(same_key, y[np.maximum(prev, 0)], UNKNOWN)
        prev_time = np.where(same_key, t[np.maximum(prev, 0)], np.iinfo(np.int64).min)
        bounds = np.flatnonzero(np.r_[True, k[1:] != k[:-1], True])
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):  # once per key
            state = self.last.get(keys[k[lo]])
            if state is None:
                continue
            # the key's newest earlier event is the state's where it is newer than the
            # batch's own previous row, and still before the row
            rows = lo + np.flatnonzero((state[0] < t[lo:hi]) & (state[0] > prev_time[lo:hi]))
            lag[rows] = state[1]
        out[order] = lag
        for i in bounds[1:] - 1:  # each key's newest event, if newer than its state
            key = keys[k[i]]
            state = self.last.get(key)
            if state is None or t[i] > state[0]:
                self.last[key] = (int(t[i]), int(y[i]))
        return out

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """``batch`` with the lag appended to its features (one-hot)."""
        lags = self.lags(batch)
        onehot = np.zeros((batch.num_rows, self.num_classes), dtype=np.float32)
        valid = (lags >= 0) & (lags < self.num_classes)
        onehot[np.flatnonzero(valid), lags[valid]] = 1.0
        return with_features(batch, np.hstack([mb.features_numpy(batch), onehot]))

    def snapshot(self) -> bytes:
        return pickle.dumps((self.num_classes, self.last))

    def restore(self, data: bytes | None) -> None:
        if data is None:
            self.last = {}
            return
        num_classes, last = pickle.loads(data)
        if num_classes != self.num_classes:
            msg = f"a snapshot of {num_classes} classes cannot restore {self.num_classes}"
            raise ValueError(msg)
        self.last = dict(last)


def with_features(batch: pa.RecordBatch, features: np.ndarray) -> pa.RecordBatch:
    """``batch`` with its feature column replaced (schema metadata kept)."""
    feats = np.ascontiguousarray(features, dtype=np.float32)
    column = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), feats.shape[1])
    i = batch.schema.get_field_index(mb.FEATURES)
    field_ = pa.field(mb.FEATURES, column.type)
    return batch.set_column(i, field_, column).replace_schema_metadata(batch.schema.metadata)
