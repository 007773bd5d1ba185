"""Drift detection on a stream of values (e.g. per-event prequential errors).

(ADWIN, in C over whole micro-batches, has a module of its own: :mod:`model.adwin`.)

:class:`PageHinkley` raises an alarm when the running mean of the values rises by more
than ``threshold`` above its minimum (Page's CUSUM test for an increase in mean);
after an alarm it starts afresh. :class:`DDM` (Gama et al., 2004) watches an error
rate: a warning when it rises two standard deviations above its lowest, a drift at
three. Both take one value (:meth:`update`) or a whole micro-batch of them at once
(:meth:`update_many`, vectorized with numpy: cumulative sums and running minima, a
Python step only per alarm), with the same alarms either way.

>>> ph = PageHinkley(delta=0.01, threshold=0.5)
>>> alarms = [ph.update(0.1) for _ in range(50)] + [ph.update(0.6) for _ in range(20)]
>>> alarms.index(True)
51

Its state is four numbers, so a detector resumes where a snapshot left it:

>>> resumed = PageHinkley(delta=0.01, threshold=0.5)
>>> resumed.restore(ph.snapshot())
>>> resumed.update(0.6) == ph.update(0.6)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.adwin import ADWIN
from model.alarms import Alarms


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a series. ``alpha`` < 1
    fades the cumulative sum (each step multiplies it by ``alpha`` first), as River's
    detector does, so that a long calm stretch does not delay a later alarm."""

    delta: float = 0.005
    threshold: float = 1.0
    min_samples: int = 5
    alpha: float = 1.0
    n: int = field(default=0, init=False)
    mean: float = field(default=0.0, init=False)
    cumulative: float = field(default=0.0, init=False)
    minimum: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.delta < 0 or self.threshold <= 0 or self.min_samples <= 0:
            msg = (
                "need delta >= 0, threshold > 0, min_samples > 0, got "
                f"{self.delta!r}, {self.threshold!r}, {self.min_samples!r}"
            )
            raise ValueError(msg)
        if not 0.9 <= self.alpha <= 1.0:
            msg = f"alpha must be in [0.9, 1], got {self.alpha!r}"
            raise ValueError(msg)

    def update(self, value: float) -> bool:
        """Add one value; True when it completes a drift alarm."""
        self.n += 1
        self.mean += (value - self.mean) / self.n
        self.cumulative = self.alpha * self.cumulative + value - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.n >= self.min_samples and self.cumulative - self.minimum > self.threshold:
            self.n, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
            return True
        return False

    def update_many(self, values: np.ndarray) -> Alarms:
        """Add a batch of values; where the alarms are (see :class:`Alarms`)."""
        return _page_hinkley_many(self, np.asarray(values, dtype=np.float64))

    def snapshot(self) -> dict[str, float]:
        """The running statistics (the thresholds are configuration, not state)."""
        return {
            "n": self.n,
            "mean": self.mean,
            "cumulative": self.cumulative,
            "minimum": self.minimum,
        }

    def restore(self, state: dict[str, float]) -> None:
        """Continue from a :meth:`snapshot`."""
        self.n, self.mean = int(state["n"]), state["mean"]
        self.cumulative, self.minimum = state["cumulative"], state["minimum"]


_PH_PIECE = 4096  # values per vectorized piece (0.9^-4096 is about 1e187)


def _page_hinkley_many(ph: PageHinkley, values: np.ndarray) -> Alarms:
    drifts: list[int] = []
    stats: list[float] = []
    at = 0
    while at < len(values):
        # with fading, sum_i = a^(i+1) (sum_0 + sum_j a^-(j+1) d_j): computed in pieces
        # short enough that a^-(j+1) stays far from overflowing
        x = values[at : at + _PH_PIECE]
        n = ph.n + np.arange(1, len(x) + 1)
        mean = (ph.n * ph.mean + np.cumsum(x)) / n
        steps = x - mean - ph.delta
        if ph.alpha == 1.0:
            cumulative = ph.cumulative + np.cumsum(steps)
        else:
            grow = ph.alpha ** np.arange(1, len(x) + 1)
            cumulative = grow * (ph.cumulative + np.cumsum(steps / grow))
        minimum = np.minimum(ph.minimum, np.minimum.accumulate(cumulative))
        stat = cumulative - minimum
        hit = np.flatnonzero((n >= ph.min_samples) & (stat > ph.threshold))
        if not len(hit):
            ph.n, ph.mean = int(n[-1]), float(mean[-1])
            ph.cumulative, ph.minimum = float(cumulative[-1]), float(minimum[-1])
            at += len(x)
            continue
        i = int(hit[0])
        drifts.append(at + i)
        stats.append(float(stat[i]))
        ph.n, ph.mean, ph.cumulative, ph.minimum = 0, 0.0, 0.0, 0.0
        at += i + 1
    empty = np.zeros(0, dtype=np.int64)
    return Alarms(np.array(drifts, dtype=np.int64), empty, np.array(stats))


@dataclass
class DDM:
    """The drift detection method on a stream of errors (0: right, 1: wrong)."""

    warning_level: float = 2.0
    drift_level: float = 3.0
    min_samples: int = 30
    n: int = field(default=0, init=False)
    errors: float = field(default=0.0, init=False)
    p_min: float = field(default=math.inf, init=False)
    s_min: float = field(default=math.inf, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.warning_level < self.drift_level or self.min_samples <= 0:
            msg = (
                "need 0 < warning_level < drift_level and min_samples > 0, got "
                f"{self.warning_level!r}, {self.drift_level!r}, {self.min_samples!r}"
            )
            raise ValueError(msg)

    def update(self, error: float) -> bool:
        """Add one error; True when it completes a drift alarm."""
        return bool(len(self.update_many(np.array([error])).drifts))

    def update_many(self, errors: np.ndarray) -> Alarms:
        """Add a batch of errors; where the alarms are (see :class:`Alarms`)."""
        values = np.asarray(errors, dtype=np.float64)
        drifts: list[int] = []
        warnings: list[np.ndarray] = []
        stats: list[float] = []
        at = 0
        while at < len(values):
            x = values[at:]
            n = self.n + np.arange(1, len(x) + 1)
            p = (self.errors + np.cumsum(x)) / n
            s = np.sqrt(p * (1 - p) / n)
            ready = n >= self.min_samples
            ps = np.where(ready, p + s, np.inf)
            # the lowest p + s so far (the newest of equals, as a sequential <= has it)
            run_min = np.minimum(self.p_min + self.s_min, np.minimum.accumulate(ps))
            newest = np.where(ready & (ps <= run_min), np.arange(len(x)), -1)
            where_min = np.maximum.accumulate(newest)
            from_state = where_min < 0
            idx = np.maximum(where_min, 0)
            p_min = np.where(from_state, self.p_min, p[idx])
            s_min = np.where(from_state, self.s_min, s[idx])
            with np.errstate(invalid="ignore", divide="ignore"):
                level = np.where(
                    ready & np.isfinite(s_min) & (s_min > 0),
                    (ps - p_min) / np.where(s_min > 0, s_min, 1.0),
                    -np.inf,
                )
            hit = np.flatnonzero(level > self.drift_level)
            end = int(hit[0]) if len(hit) else len(x)
            warn = np.flatnonzero(level[:end] > self.warning_level)
            warnings.append(at + warn)
            if not len(hit):
                self.n, self.errors = int(n[-1]), float(self.errors + x.sum())
                self.p_min, self.s_min = float(p_min[-1]), float(s_min[-1])
                break
            drifts.append(at + end)
            stats.append(float(level[end]))
            self.n, self.errors, self.p_min, self.s_min = 0, 0.0, math.inf, math.inf
            at += end + 1
        warned = np.concatenate(warnings) if warnings else np.zeros(0, dtype=np.int64)
        return Alarms(np.array(drifts, dtype=np.int64), warned.astype(np.int64), np.array(stats))

    def snapshot(self) -> dict[str, float]:
        return {"n": self.n, "errors": self.errors, "p_min": self.p_min, "s_min": self.s_min}

    def restore(self, state: dict[str, float]) -> None:
        self.n, self.errors = int(state["n"]), state["errors"]
        self.p_min, self.s_min = state["p_min"], state["s_min"]


DETECTORS: dict[str, Any] = {
    # River's defaults for Page-Hinkley and ADWIN (benchmarks/drift.py: the same alarms)
    "page-hinkley": lambda: PageHinkley(delta=0.005, threshold=50.0, min_samples=30, alpha=0.9999),
    "adwin": lambda: ADWIN(delta=0.002),
    "ddm": DDM,
}
# Detectors without warnings of their own warn by a more sensitive copy of themselves
# (as adaptive random forests run a second ADWIN with a larger delta): half the
# threshold; five times the delta.
WARNING_DETECTORS: dict[str, Any] = {
    "page-hinkley": lambda: PageHinkley(delta=0.005, threshold=25.0, min_samples=30, alpha=0.9999),
    "adwin": lambda: ADWIN(delta=0.01),
}


@dataclass
class KeyedDrift:
    """One error-rate detector per key, over micro-batches of every key at once: a
    batch's errors are grouped by key (event-time order within each) and each key's
    group goes to its detector in one vectorized call. ``detector``: a name in
    :data:`DETECTORS`."""

    detector: str = "page-hinkley"
    states: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            msg = f"detector must be one of {sorted(DETECTORS)}, got {self.detector!r}"
            raise ValueError(msg)

    def update(
        self, keys: list[str], codes: np.ndarray, times_us: np.ndarray, errors: np.ndarray
    ) -> list[tuple[str, int, int, float]]:
        """Add each row's error (``codes`` index ``keys``); the alarms raised, as
        ``(key, row, kind, statistic)`` with ``kind`` 1 for a drift, 0 a warning."""
        order = np.lexsort((np.arange(len(codes)), times_us, codes))
        sorted_codes = codes[order]
        bounds = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1], True])
        found: list[tuple[str, int, int, float]] = []
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            if lo == hi:
                continue
            key = keys[int(sorted_codes[lo])]
            det = DETECTORS[self.detector]()
            if key in self.states:
                det.restore(self.states[key])
            rows = order[lo:hi]
            alarms = det.update_many(errors[rows])
            self.states[key] = det.snapshot()
            for i, stat in zip(alarms.drifts, alarms.statistics, strict=True):
                found.append((key, int(rows[i]), 1, float(stat)))
            for i in alarms.warnings:
                found.append((key, int(rows[i]), 0, math.nan))
        return found
