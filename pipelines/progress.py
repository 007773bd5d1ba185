"""Progress of a running pipeline: events, events/s, watermark lag, model, drift alarms.

Two taps (DoFns) record what flows past: the source batches (events read, newest event
time, the source watermark) and the predictions (events scored, newest model version,
and a Page-Hinkley drift detector on each batch's prequential error). A printer thread
reports every few seconds: one updating line with a bar on a terminal, plain lines
otherwise. The samples also feed the run report's throughput plot.

The taps write to this process's memory, so live progress needs an in-process runner
(the DirectRunner set-up of :mod:`runners.direct`); elsewhere the run still works,
only without live lines.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.utils.timestamp import MIN_TIMESTAMP

from model import batch as mb
from model.batch import watermark_of
from model.drift import PageHinkley


@dataclass
class Progress:
    """What the taps saw so far (guarded by ``lock``)."""

    events_in: int = 0
    scored: int = 0
    newest_event_us: int | None = None
    watermark_us: int | None = None
    model_version: int = 0
    drift_alarms: list[int] = field(default_factory=list)  # event time of each alarm
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    detector: PageHinkley = field(default_factory=lambda: PageHinkley(delta=0.01, threshold=1.5))
    # per key: window start (us) -> [events, labelled, correct], the latest windows
    keys: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    window_us: int = 0  # the pipeline's window size (0: one window for everything)
    count_keys: bool = True  # per-key statistics (not where keys are users by the million)

    def lag_s(self) -> float | None:
        if self.newest_event_us is None or self.watermark_us is None:
            return None
        return max(0.0, (self.newest_event_us - self.watermark_us) / 1e6)


_CURRENT: dict[str, Progress] = {}


def start(run_id: str) -> Progress:
    _CURRENT[run_id] = Progress()
    return _CURRENT[run_id]


def finish(run_id: str) -> None:
    """Forget a run: its taps (still running in a worker) then record nothing more."""
    _CURRENT.pop(run_id, None)


def get(run_id: str) -> Progress | None:
    return _CURRENT.get(run_id)


class _SourceTap(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, batch: pa.RecordBatch) -> Iterator[None]:
        p = get(self._run_id)
        if p is not None and batch.num_rows:
            newest = int(mb.event_times_us(batch).max())
            watermark = watermark_of(batch)
            with p.lock:
                p.events_in += batch.num_rows
                p.newest_event_us = max(p.newest_event_us or newest, newest)
                # (a bounded run's batches carry Beam's minimum: no watermark yet)
                if watermark is not None and watermark > MIN_TIMESTAMP.micros:
                    if watermark > (p.watermark_us or watermark - 1):
                        p.watermark_us = watermark
        return iter(())


class _PredictionTap(beam.DoFn):
    def __init__(self, run_id: str) -> None:
        self._run_id = run_id

    def process(self, batch: pa.RecordBatch) -> Iterator[None]:
        p = get(self._run_id)
        if p is None or not batch.num_rows:
            return iter(())
        names = batch.schema.names
        labels = mb.labels_numpy(batch) if mb.PREDICTION in names else None
        with p.lock:
            p.scored += batch.num_rows
            if mb.MODEL_VERSION in names:  # (anomaly rows have none)
                versions = batch.column(mb.MODEL_VERSION).to_numpy(zero_copy_only=False)
                p.model_version = max(p.model_version, int(versions.max()))
            correct = None
            if labels is not None:
                pred = batch.column(mb.PREDICTION).to_numpy(zero_copy_only=False)
                error = float(np.mean(pred != labels))
                if p.detector.update(error):
                    p.drift_alarms.append(mb.min_event_time_us(batch))
                correct = pred == labels
            if p.count_keys:
                _count_keys(p, batch, labels, correct)
        return iter(())


KEY_WINDOWS = 8  # the latest windows kept per key
MAX_KEYS = 10_000  # keys kept (the earliest seen go first)


def _count_keys(
    p: Progress, batch: pa.RecordBatch, labels: np.ndarray | None, correct: np.ndarray | None
) -> None:
    """Per key and window: events, labelled events, correct predictions."""
    codes, names = mb.key_codes(batch)
    times = mb.event_times_us(batch)
    starts = times - times % p.window_us if p.window_us else np.zeros_like(times)
    pairs, inverse = np.unique(
        np.stack([codes.astype(np.int64), starts]), axis=1, return_inverse=True
    )
    inverse = inverse.ravel()
    events = np.bincount(inverse, minlength=pairs.shape[1])
    known = labels >= 0 if labels is not None else np.zeros(len(codes), bool)
    labelled = np.bincount(inverse, weights=known, minlength=pairs.shape[1])
    right = (
        np.bincount(inverse, weights=correct & known, minlength=pairs.shape[1])
        if correct is not None
        else np.zeros(pairs.shape[1])
    )
    for code, start, n, lab, ok in zip(pairs[0].tolist(), pairs[1].tolist(), events.tolist(),
                                       labelled.tolist(), right.tolist(), strict=True):  # fmt: skip
        windows = p.keys.setdefault(names[code], {})
        counts = windows.setdefault(start, [0, 0, 0])
        counts[0] += n
        counts[1] += int(lab)
        counts[2] += int(ok)
        if len(windows) > KEY_WINDOWS:
            del windows[min(windows)]
    if len(p.keys) > MAX_KEYS:  # forget the earliest keys, a tenth at a time
        for key in list(itertools.islice(p.keys, len(p.keys) - MAX_KEYS * 9 // 10)):
            del p.keys[key]


def attach(
    run_id: str,
    batches: beam.PCollection,
    predictions: beam.PCollection,
    window_s: float = 0.0,
    *,
    count_keys: bool = True,
) -> None:
    """Add the two taps to a pipeline (``window_s``: per-key statistics by window;
    ``count_keys``: whether to keep them at all)."""
    p = get(run_id)
    if p is not None:
        p.window_us = round(window_s * 1_000_000)
        p.count_keys = count_keys
    _ = batches | "ProgressSource" >> beam.ParDo(_SourceTap(run_id))
    _ = predictions | "ProgressPredictions" >> beam.ParDo(_PredictionTap(run_id))


class Printer:
    """Reports ``progress`` every ``interval`` seconds until stopped."""

    def __init__(
        self, progress: Progress, total: int | None, interval: float = 2.0, out: TextIO = sys.stderr
    ) -> None:
        self._p = progress
        self._total = total
        self._interval = interval
        self._out = out
        self._tty = hasattr(out, "isatty") and out.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> Printer:
        with self._p.lock:  # the starting point of the throughput curve
            self._p.samples.append(
                {
                    "t_s": 0.0,
                    "events_in": 0,
                    "scored": 0,
                    "model_version": 0,
                    "drift_alarms": 0,
                    "watermark_lag_s": None,
                }
            )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.report(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def report(self, final: bool = False) -> None:
        p = self._p
        with p.lock:
            elapsed = time.perf_counter() - p.started
            sample: dict[str, Any] = {
                "t_s": round(elapsed, 3),
                "events_in": p.events_in,
                "scored": p.scored,
                "model_version": p.model_version,
                "drift_alarms": len(p.drift_alarms),
                "watermark_lag_s": p.lag_s(),
            }
            p.samples.append(sample)
        rate = sample["events_in"] / elapsed if elapsed > 0 else 0.0
        lag = "-" if sample["watermark_lag_s"] is None else f"{sample['watermark_lag_s']:.1f}s"
        text = (
            f"{elapsed:7.1f}s  events {sample['events_in']:,} ({rate:,.0f}/s)  "
            f"scored {sample['scored']:,}  watermark lag {lag}  "
            f"model v{sample['model_version']}  drift alarms {sample['drift_alarms']}"
        )
        if self._tty:
            bar = ""
            if self._total:
                done = min(1.0, sample["events_in"] / self._total)
                bar = "[" + "#" * int(done * 20) + "." * (20 - int(done * 20)) + "] "
            self._out.write("\r" + bar + text + ("\n" if final else ""))
        else:
            self._out.write(text + "\n")
        self._out.flush()
