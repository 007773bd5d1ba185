"""Per key and window statistics of scored micro-batches, one row per fired pane.

This is the windowed aggregation whose panes show the trigger at work: each output
row says which pane it is (EARLY, ON_TIME or LATE, and its index), how many events
the pane covers, their mean score and, for labelled events, the accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.utils.windowed_value import PaneInfoTiming

from model import batch as mb
from transforms.inference import PREDICTION, SCORE
from transforms.lateness import NAMESPACE

# events, sum of scores, labelled events, correct predictions
_WIDTH = 4
_TIMING = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    PaneInfoTiming.UNKNOWN: "UNKNOWN",
}


def partial_stats(batch: pa.RecordBatch) -> Iterator[tuple[str, np.ndarray]]:
    """``(key, [events, sum_score, labelled, correct])`` for each key in the batch."""
    encoded = pc.dictionary_encode(batch.column(mb.KEY))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    keys = encoded.dictionary.to_pylist()
    k = len(keys)
    stats = np.zeros((k, _WIDTH), dtype=np.float64)
    stats[:, 0] = np.bincount(codes, minlength=k)
    score = batch.column(SCORE).to_numpy(zero_copy_only=False)
    stats[:, 1] = np.bincount(codes, weights=score, minlength=k)
    labels = mb.labels_numpy(batch)
    if labels is not None:
        correct = labels == batch.column(PREDICTION).to_numpy(zero_copy_only=False)
        stats[:, 2] = stats[:, 0]
        stats[:, 3] = np.bincount(codes, weights=correct, minlength=k)
    for i, key in enumerate(keys):
        yield key, stats[i]


class _SumStats(beam.CombineFn):
    def create_accumulator(self) -> np.ndarray:
        return np.zeros(_WIDTH)

    def add_input(self, acc: np.ndarray, value: np.ndarray) -> np.ndarray:
        return acc + value

    def merge_accumulators(self, accs: Any) -> np.ndarray:
        return np.sum(list(accs), axis=0) if accs else np.zeros(_WIDTH)

    def extract_output(self, acc: np.ndarray) -> np.ndarray:
        return acc


class _FormatPaneDoFn(beam.DoFn):
    def __init__(self) -> None:
        self._panes = beam.metrics.Metrics.counter(NAMESPACE, "windows_fired")

    def process(
        self,
        kv: tuple[str, np.ndarray],
        window: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        key, s = kv
        self._panes.inc()
        start = getattr(window, "start", None)
        end = getattr(window, "end", None)
        yield {
            "key": key,
            "window_start_us": None if start is None else int(start.micros),
            "window_end_us": None if end is None else int(end.micros),
            "pane": _TIMING.get(pane.timing, str(pane.timing)),
            "pane_index": int(pane.index),
            "is_last": bool(pane.is_last),
            "events": int(s[0]),
            "mean_score": float(s[1] / s[0]) if s[0] else None,
            "labelled": int(s[2]),
            "accuracy": float(s[3] / s[2]) if s[2] else None,
        }


class WindowStats(beam.PTransform):
    """Windowed scored batches in, one dict per (key, window, pane) out."""

    def expand(self, scored: beam.PCollection) -> beam.PCollection:
        return (
            scored
            | "PartialStats" >> beam.FlatMap(partial_stats)
            | "SumPerKeyWindow" >> beam.CombinePerKey(_SumStats())
            | "FormatPane" >> beam.ParDo(_FormatPaneDoFn())
        )
