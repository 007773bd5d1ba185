"""The Numenta Anomaly Benchmark's scoring rules (NAB v1.1, as its whitepaper and
repository publish them), written for this project.

A data set is a series of points with labelled anomaly windows. A detector's
alarms score so (a profile gives the weights ``A_TP``, ``A_FP``, ``A_FN``):

- the first ``min(floor(0.15 n), 750)`` points are probationary: alarms there are
  not scored;
- a window counts once: its earliest alarm scores ``A_TP x S(y) / S(-1)``, where ``y``
  is the alarm's place in the window (``-1`` at its first point, towards ``0`` at its
  last) and ``S(y) = 2 / (1 + e^(5y)) - 1`` (the scaled sigmoid); a window without an
  alarm scores ``-A_FN``;
- an alarm outside every window scores ``A_FP x S(y)`` with ``y`` its distance past
  the last window before it, in that window's widths (``S`` falls from 0 at the
  window's end towards -1); with no window before it, ``-A_FP``;
- a detector's score over a corpus is normalized against the null detector (no
  alarm: ``-A_FN`` per window) and the perfect one (every window at its first point:
  ``A_TP`` per window): ``100 x (raw - null) / (perfect - null)``.

NAB turns a detector's ``anomaly_score`` into alarms with one threshold for the whole
corpus, the one that scores best (:func:`best_threshold`); :func:`score` also takes
alarms decided online (``is_anomaly``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PROBATION = 0.15
PROBATION_MOST = 750  # 0.15 x 5000 points


@dataclass(frozen=True)
class Profile:
    tp: float
    fp: float
    fn: float


PROFILES = {
    "standard": Profile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": Profile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": Profile(tp=1.0, fp=0.11, fn=2.0),
}


def scaled_sigmoid(y: float) -> float:
    """``2 / (1 + e^(5y)) - 1``, and -1 from 3 widths past a window on."""
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


@dataclass(frozen=True)
class Series:
    """One data set: its point count and its windows as ``(first, last)`` indices."""

    points: int
    windows: tuple[tuple[int, int], ...]

    @classmethod
    def from_times(cls, times: np.ndarray, windows: list[tuple[int, int]]) -> Series:
        """``times`` (sorted) and windows given as ``(start, end)`` times: each window
        covers the points with ``start <= t <= end``."""
        spans = []
        for start, end in windows:
            first = int(np.searchsorted(times, start, side="left"))
            last = int(np.searchsorted(times, end, side="right")) - 1
            if last >= first:
                spans.append((first, last))
        return cls(len(times), tuple(sorted(spans)))

    @property
    def probation(self) -> int:
        return int(min(math.floor(PROBATION * self.points), PROBATION_MOST))


@dataclass(frozen=True)
class Tally:
    raw: float
    windows: int
    detected: int  # windows with an alarm in them
    false_alarms: int  # scored alarms outside every window
    points: int


def score(series: Series, alarms: np.ndarray, profile: Profile) -> Tally:
    """The raw NAB score of the alarm indices ``alarms`` on ``series``."""
    alarms = np.sort(np.asarray(alarms, dtype=np.int64))
    alarms = alarms[alarms >= series.probation]
    total, detected = 0.0, 0
    best = scaled_sigmoid(-1.0)
    inside = np.zeros(len(alarms), dtype=bool)
    for first, last in series.windows:
        hit = alarms[(alarms >= first) & (alarms <= last)]
        inside |= (alarms >= first) & (alarms <= last)
        if first < series.probation and last < series.probation:
            continue  # a window wholly in probation is not scored
        if len(hit):
            width = last - first + 1
            y = -(last - int(hit[0]) + 1) / width
            total += profile.tp * scaled_sigmoid(y) / best
            detected += 1
        else:
            total -= profile.fn
    false = alarms[~inside]
    ends = np.array([last for _, last in series.windows], dtype=np.int64)  # sorted
    widths = np.array([last - first + 1 for first, last in series.windows], dtype=np.int64)
    before = np.searchsorted(ends, false, side="left") - 1  # the last window ending before
    after = before >= 0
    past = np.abs(false[after] - ends[before[after]]) / np.maximum(1, widths[before[after]] - 1)
    sigmoid = np.where(past >= 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * np.minimum(past, 3.0))) - 1.0)
    total += profile.fp * float(sigmoid.sum()) - profile.fp * int((~after).sum())
    false_alarms = len(false)
    return Tally(total, _scored_windows(series), detected, false_alarms, series.points)


def _scored_windows(series: Series) -> int:
    return sum(1 for _, last in series.windows if last >= series.probation)


def normalized(tallies: list[Tally], profile: Profile) -> float:
    """``100 x (raw - null) / (perfect - null)`` over a corpus."""
    windows = sum(t.windows for t in tallies)
    if windows == 0:
        return float("nan")
    null, perfect = -profile.fn * windows, profile.tp * windows
    return 100.0 * (sum(t.raw for t in tallies) - null) / (perfect - null)


def best_threshold(
    corpus: list[tuple[Series, np.ndarray]],
    profile: Profile,
    candidates: int = 200,
    distinct: int = 5_000,
) -> tuple[float, float]:
    """NAB's threshold optimization: the one threshold on the anomaly scores (each
    series' scores, ``[points]``) that gives the corpus its best normalized score;
    ``(threshold, normalized score)``. Candidates: each of the ``distinct`` largest
    distinct scores (every one, for a detector whose scores are mostly zero), and
    ``candidates`` quantiles of all scores from the top 10% to the top 0.001%."""
    pooled = np.concatenate([s for _, s in corpus])
    top = np.unique(pooled)[-distinct:]
    grid = np.quantile(pooled, 1.0 - np.logspace(-1, -5, candidates))
    levels = np.unique(np.concatenate([top, grid]))
    nothing = [score(series, np.array([], dtype=np.int64), profile) for series, _ in corpus]
    best = (math.inf, normalized(nothing, profile))  # no alarm at all
    for level in levels:
        tallies = [score(series, np.flatnonzero(s >= level), profile) for series, s in corpus]
        value = normalized(tallies, profile)
        if value > best[1]:
            best = (float(level), value)
    return best
