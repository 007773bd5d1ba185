"""Streaming anomaly detectors for one key's series, without labels and without
looking ahead: each point is scored from the points before it, then learnt.

- :class:`RobustZ`: distance from the rolling median in rolling MADs (of the values,
  or of their changes: a jump);
- :class:`Seasonal`: distance from what this hour of the week usually holds (an
  exponentially weighted mean and deviation per hour of the week);
- :class:`Forecast`: the residual of a :class:`~model.streaming_transformer.StreamingTransformer`
  that forecasts the next value (decoded step by step against its KV cache, trained
  online on the latest values: prequential);
- :class:`Surprise`: a detector's raw score as how unlikely it is among the
  detector's own recent scores (an online-calibrated tail: empirical, and
  peaks-over-threshold at the top), so that detectors compare.

:class:`KeyDetector` runs them all and combines them into one ``anomaly_score`` in
[0, 1] and ``is_anomaly``. Every object pickles (its state is plain arrays, numbers
and, for the forecaster, its weights, optimizer and KV cache as bytes): per-key
state.
"""

from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import torch

from model.streaming_transformer import StreamingTransformer

HOUR_US = 3_600 * 1_000_000
SURPRISE_SCALE = 2.0  # anomaly_score = 1 - exp(-rise / scale): 0.5 at a rise of ~1.4
WEEK_HOURS = 168
MIN_EXCESS = 10  # excesses over the quantile that fit a tail; fewer: the spread bounds it
COMBINED = "/combined"  # where the combined rises are kept (no detector's name: no "/" first)


class _Rolling:
    """Robust statistics (median; spread: 1.4826 MAD, or the standard deviation where
    the MAD is 0) of the last ``width`` values before each new one, refreshed every
    ``refresh`` values: a value's statistics are those of the values before the last
    multiple of ``refresh`` at or before it. The same whatever blocks the values come
    in; ``refresh`` times fewer medians than one per value."""

    def __init__(self, width: int, refresh: int) -> None:
        self.width, self.refresh = width, refresh
        self.history: deque[float] = deque(maxlen=width + refresh)
        self.seen = 0  # values so far

    def windows(self, block: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(positions in block, the history those values are judged by)`` for each
        group of ``block``'s values that share one refresh point; the block then
        joins the history."""
        first = self.seen - len(self.history)  # the index of the history's oldest value
        joined = np.concatenate([np.fromiter(self.history, np.float64, len(self.history)), block])
        at = (self.seen + np.arange(len(block))) // self.refresh * self.refresh
        groups = []
        for end in np.unique(at):
            where = np.flatnonzero(at == end)
            groups.append((where, joined[end - min(int(end), self.width) - first : end - first]))
        self.history.extend(block.tolist())
        self.seen += len(block)
        return groups

    def stats(self, block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(median, spread, count)`` for each value of ``block``; the block then
        joins the history."""
        median, spread = np.zeros(len(block)), np.ones(len(block))
        counts = np.zeros(len(block), dtype=np.int64)
        for where, window in self.windows(block):
            counts[where] = len(window)
            if len(window):
                m = float(np.median(window))
                mad = float(np.median(np.abs(window - m))) * 1.4826
                median[where] = m
                spread[where] = mad if mad > 0 else float(window.std()) or 1e-9
        return median, spread, counts


class RobustZ:
    """``|x - median| / (1.4826 MAD)`` over the last ``width`` values (of the
    values, or with ``changes`` of their differences); NaN before 30 are known."""

    def __init__(self, width: int = 288, changes: bool = False, refresh: int = 8) -> None:
        self.width, self.changes = width, changes
        self.rolling = _Rolling(width, refresh)
        self.last: float | None = None

    def block(self, values: np.ndarray) -> np.ndarray:
        x, first = values, False
        if self.changes:  # (the very first value has no change before it)
            last, first = self.last, self.last is None
            x = np.diff(values) if last is None else np.diff(values, prepend=last)
            self.last = float(values[-1])
        median, spread, counts = self.rolling.stats(x)
        out = np.minimum(np.abs(x - median) / spread, 1e6)
        out[counts < min(self.width, 30)] = np.nan
        return np.concatenate([[np.nan], out]) if first else out


class _Profile:
    """Exponentially weighted mean and absolute deviation per bucket of a period,
    with the number of periods each bucket has been seen in."""

    def __init__(self, buckets: int, rate: float) -> None:
        self.rate = rate
        self.mean = [0.0] * buckets
        self.dev = [0.0] * buckets
        self.periods = [0] * buckets
        self.last = [-1] * buckets

    def score(self, bucket: int, value: float) -> float:
        if self.periods[bucket] < 2:  # seen in one period at most: no profile yet
            return math.nan
        return min(1e6, abs(value - self.mean[bucket]) / (self.dev[bucket] + 1e-9))

    def learn(self, bucket: int, period: int, value: float, spread: float) -> None:
        if self.last[bucket] != period:
            self.last[bucket] = period
            self.periods[bucket] += 1
        if self.periods[bucket] == 1 and self.dev[bucket] == 0:
            self.mean[bucket], self.dev[bucket] = value, spread  # the series' own scale
            return
        error = value - self.mean[bucket]
        self.mean[bucket] += self.rate * error
        self.dev[bucket] += self.rate * (abs(error) - self.dev[bucket])


class Seasonal:
    """Distance from what this hour of the week (or, until each hour of the week has
    been seen twice, this hour of the day) usually holds, in its usual deviations.
    A bucket starts from the series' overall deviation, not from zero."""

    def __init__(self, rate: float = 0.1) -> None:
        self.day = _Profile(24, rate)
        self.week = _Profile(WEEK_HOURS, rate)
        self.mean, self.spread, self.n = 0.0, 0.0, 0

    def block(self, times_us: np.ndarray, values: np.ndarray) -> np.ndarray:
        out = np.empty(len(values))
        hours_all = (times_us // HOUR_US + 72).tolist()  # 1970-01-01: a Thursday
        for i, (hours, value) in enumerate(zip(hours_all, values.tolist(), strict=True)):
            week_hour, day_hour = hours % WEEK_HOURS, hours % 24
            score = self.week.score(week_hour, value)
            out[i] = self.day.score(day_hour, value) if math.isnan(score) else score
            self.n += 1
            if self.n == 1:
                self.mean = value  # the spread then grows from 0, not from |value|
            rate = max(1.0 / self.n, 0.01)
            self.spread += rate * (abs(value - self.mean) - self.spread)
            self.mean += rate * (value - self.mean)
            self.week.learn(week_hour, hours // WEEK_HOURS, value, self.spread)
            self.day.learn(day_hour, hours // 24, value, self.spread)
        return out


class Forecast:
    """The absolute residual of an online-trained streaming Transformer's one-step
    forecast of the values standardized by running moments (its calibration, the
    :class:`Surprise`, judges it against its recent ones). A block is forecast at
    once against the KV cache (chunked prefill: as step by step), and every
    ``every`` values the net takes one Adam step on the latest ``history`` values:
    each forecast comes from weights that learnt only from values before it.
    (Cached keys and values from before a step fade out of the window as it
    slides.)"""

    def __init__(
        self, window: int = 32, history: int = 96, every: int = 32, seed: int = 0,
        columns: int = 1,
    ) -> None:  # fmt: skip
        self.columns = columns
        self.net = self._net(window, columns, seed)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=3e-3, foreach=True)
        self.cache = self.net.new_cache(1)
        self.every, self.history, self.window = every, history, window
        self.recent: deque[list[float]] = deque(maxlen=history)  # standardized rows
        self.forecast: list[float] | None = None
        self.mean, self.var, self.n = [0.0] * columns, [1.0] * columns, 0

    @staticmethod
    def _net(window: int, columns: int, seed: int) -> StreamingTransformer:
        return StreamingTransformer(
            d_in=columns, d_model=16, heads=2, layers=2, window=window, seed=seed
        )

    def _standard(self, values: np.ndarray) -> np.ndarray:
        """Rows ``[T, columns]`` in units of each column's running moments."""
        out = np.empty(values.shape)
        mean, var = self.mean, self.var
        for i, row in enumerate(values.tolist()):
            self.n += 1
            rate = max(1.0 / self.n, 0.001)
            for c, value in enumerate(row):
                delta = value - mean[c]
                mean[c] += rate * delta
                var[c] += rate * (delta * delta - var[c])
                out[i, c] = (value - mean[c]) / math.sqrt(var[c] + 1e-12)
        return np.clip(out, -20.0, 20.0)

    def block(self, values: np.ndarray) -> np.ndarray:
        """Each value's residual (NaN until ``history`` values have come): the block
        in parts that end where the count of values reaches a multiple of ``every``,
        each forecast at once, then a learning step there; so the same whatever
        blocks the values come in. ``values``: ``[T]`` (one column) or ``[T,
        columns]``; the residuals have its shape."""
        rows = np.asarray(values, dtype=np.float64)
        rows = rows[:, None] if rows.ndim == 1 else rows
        parts, i = [], 0
        while i < len(rows):
            take = min(len(rows) - i, self.every - self.n % self.every)
            parts.append(self._part(rows[i : i + take]))
            i += take
            if self.n % self.every == 0 and len(self.recent) >= self.history:
                self._learn()
        out = np.concatenate(parts) if parts else np.zeros((0, self.columns))
        return out.reshape(np.shape(values))

    def _part(self, rows: np.ndarray) -> np.ndarray:
        first = self.n
        x = self._standard(rows)
        forecasts = self.net.extend(torch.tensor(x, dtype=torch.float32), self.cache).tolist()
        # each point's forecast: from the one before (none before the first)
        last = [math.nan] * self.columns if self.forecast is None else self.forecast
        out = np.abs(x - np.array([last, *forecasts[:-1]]))
        out[first + np.arange(len(rows)) + 1 <= self.history] = np.nan
        self.forecast = forecasts[-1]
        self.recent.extend(x.tolist())
        return out

    def _learn(self) -> None:
        seq = torch.tensor(list(self.recent), dtype=torch.float32).unsqueeze(0)
        self.optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(self.net(seq[:, :-1]), seq[:, 1:])
        loss.backward()
        self.optimizer.step()

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        buffer = io.BytesIO()
        torch.save({"net": self.net.state_dict(), "opt": self.optimizer.state_dict(),
                    "cache": self.cache.snapshot(0)}, buffer)  # fmt: skip
        for name in ("net", "optimizer", "cache"):
            del state[name]
        state["torch"] = buffer.getvalue()
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        from model.kv_cache import KVCache

        saved = torch.load(io.BytesIO(state.pop("torch")), weights_only=True)  # type: ignore[arg-type]
        self.__dict__.update(state)
        # seeded: the global random stream stays as it was (the weights are loaded next)
        self.net = self._net(self.window, self.columns, seed=0)
        self.net.load_state_dict(saved["net"])
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=3e-3, foreach=True)
        self.optimizer.load_state_dict(saved["opt"])
        self.cache = KVCache.restore(self.net.spec, saved["cache"])


class Surprise:
    """How unlikely a raw score is given the detector's own last ``keep`` raw scores,
    as ``-log10(tail)`` (0: ordinary; 5: one in 100,000). Below the scores'
    ``quantile`` the tail is their empirical one; above it, the peaks-over-threshold
    tail: excesses over that quantile taken as exponential (the extreme-value
    limit of light and moderate tails), their mean excess fitted from the
    history. So a detector whose raw scores are heavy-tailed (spiky changes) is
    judged by its own tail and does not outshout the others, and a log tail keeps
    large anomalies apart where a rank or a probability would saturate."""

    def __init__(
        self, keep: int = 1_000, warm: int = 50, refresh: int = 32, quantile: float = 0.95
    ) -> None:
        self.rolling = _Rolling(keep, refresh)
        self.warm, self.quantile = warm, quantile

    def block(self, raws: np.ndarray) -> np.ndarray:
        """Each raw score's surprise (0 for NaN: no score yet), among the raw scores
        before it; the scores join the history."""
        out = np.zeros(len(raws))
        known = np.flatnonzero(~np.isnan(raws))
        if len(known) == 0:
            return out
        x = raws[known]
        surprise = np.zeros(len(x))
        for where, window in self.rolling.windows(x):
            if len(window) >= self.warm:
                surprise[where] = self._surprise(np.sort(window), x[where])
        out[known] = surprise
        return out

    def _surprise(self, history: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``-log10`` of each ``x``'s tail among the sorted ``history``."""
        u = float(np.quantile(history, self.quantile))
        excess = history[history > u] - u
        p_u = max(len(excess), 1) / len(history)
        scale = float(excess.mean()) if len(excess) else 0.0
        if len(excess) < MIN_EXCESS:  # ties at the top: too few excesses to fit a tail
            scale = max(scale, float(history.std()))
        scale = max(scale, 1e-9 * abs(u), 1e-300)
        above = np.minimum((x - u) / scale, 690.0)  # e^-690: the smallest double's order
        empirical = (len(history) - np.searchsorted(history, x, side="left")) / len(history)
        tail = np.where(x > u, p_u * np.exp(-np.maximum(above, 0.0)), np.maximum(empirical, p_u))
        return -np.log10(tail)


@dataclass
class KeyDetector:
    """All detectors of one key, their combined score and the online threshold.

    Each detector's surprise counts only by its rise above the largest of its own
    ``memory`` surprises before (an anomaly is news once: a level shift keeps the
    rolling detectors surprised for a while, and NAB counts each alarm outside a
    window against the detector); the combined rise is the largest detector's.
    It counts only where it tops every combined rise of the ``quiet`` points before
    (after an alarm, a while of quiet but for a larger one: NAB scores a window's
    first alarm and counts every other as a false one).
    ``anomaly_score`` is that rise mapped to [0, 1]; ``is_anomaly`` is a rise of
    ``alarm_surprise`` or more (a tail ``10^alarm_surprise`` times thinner than any
    of the detector's last ``memory`` points')."""

    memory: int = 288
    alarm_surprise: float = 1.5
    forecast: bool = True
    window: int = 32
    quiet: int = 144
    columns: int = 1
    detectors: dict[str, object] = field(default_factory=dict)
    calibrators: dict[str, Surprise] = field(default_factory=dict)
    recent: dict[str, np.ndarray] = field(default_factory=dict)  # each one's last surprises

    def __post_init__(self) -> None:
        for name in ("columns", "memory", "quiet"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.detectors:  # per column (named "level/2", ...), one forecaster for all
            for c in range(self.columns):
                at = "" if self.columns == 1 else f"/{c}"
                self.detectors |= {f"level{at}": RobustZ(), f"change{at}": RobustZ(changes=True),
                                   f"seasonal{at}": Seasonal()}  # fmt: skip
            if self.forecast:
                self.detectors["forecast"] = Forecast(window=self.window, columns=self.columns)

    def block(self, times_us: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A key's next points, in event-time order (``values``: ``[T]``, or ``[T,
        columns]``): each one's ``anomaly_score`` and ``is_anomaly``, from the points
        before it (then all are learnt). A point with a value that is not finite is
        missing: score 0, no alarm, not learnt."""
        values = np.asarray(values, dtype=np.float64)
        values = values[:, None] if values.ndim == 1 else values
        times_us = np.asarray(times_us, dtype=np.int64)
        if values.shape[1] != self.columns:
            msg = f"{values.shape[1]} value columns for a detector of {self.columns}"
            raise ValueError(msg)
        finite = np.isfinite(values).all(axis=1)
        if not finite.all():
            scores, alarms = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
            if finite.any():
                scores[finite], alarms[finite] = self.block(times_us[finite], values[finite])
            return scores, alarms
        if len(values) == 0:
            return np.zeros(0), np.zeros(0, dtype=bool)
        rises = np.zeros(len(values))
        for name, detector in self.detectors.items():
            if isinstance(detector, Forecast):
                raws = detector.block(values)
                names = (
                    [name] if self.columns == 1 else [f"{name}/{c}" for c in range(self.columns)]
                )
            else:
                column = values[:, int(name.rsplit("/", 1)[1]) if "/" in name else 0]
                if isinstance(detector, Seasonal):
                    raws = detector.block(times_us, column)
                else:
                    raws = detector.block(column)  # type: ignore[attr-defined]
                names = [name]
            for c, each in enumerate(names):
                calibrator = self.calibrators.setdefault(each, Surprise())
                raw = raws if raws.ndim == 1 else raws[:, c]
                rises = np.maximum(rises, self._rise(each, calibrator.block(raw)))
        rises = np.where(rises > self._before(COMBINED, rises, self.quiet), rises, 0.0)
        return 1.0 - np.exp(-rises / SURPRISE_SCALE), rises >= self.alarm_surprise

    def _rise(self, name: str, surprise: np.ndarray) -> np.ndarray:
        """Each surprise's rise above the largest of the ``memory`` surprises before
        it (zeros stand in for points before the first: a surprise is never below 0)."""
        return np.maximum(0.0, surprise - self._before(name, surprise, self.memory))

    def _before(self, name: str, values: np.ndarray, width: int) -> np.ndarray:
        """The largest of the ``width`` values before each of ``values`` (kept under
        ``name`` from block to block)."""
        joined = np.concatenate([self.recent.get(name, np.zeros(width)), values])
        self.recent[name] = joined[-width:]
        before = np.lib.stride_tricks.sliding_window_view(joined[:-1], width)
        return before[-len(values) :].max(axis=1)

    def __call__(self, time_us: int, value: float) -> tuple[float, bool]:
        """One point: ``(anomaly_score, is_anomaly)``, from the points before it."""
        scores, alarms = self.block(np.array([time_us]), np.array([value]))
        return float(scores[0]), bool(alarms[0])
