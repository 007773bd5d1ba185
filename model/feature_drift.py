"""Feature-distribution drift from tfx-bsl quantile sketches.

A :class:`FeatureSketch` is one ``tfx_bsl.sketches.QuantilesSketch`` with a stream
per feature: micro-batches are added to it as they come and sketches of the same
window made on different bundles or workers merge into one (:meth:`merge`), with
the sketch's own error bound (``eps``). Two windows are compared feature by feature
by the **Kolmogorov-Smirnov distance** of their sketched distributions (the largest
gap between the two CDFs, each read off its quantiles), and a feature drifts when
that distance passes the two-sample KS test's critical value for the windows'
sizes at level ``alpha`` (plus the sketches' own error), so small windows need a
larger gap than large ones.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> a, b = FeatureSketch(2), FeatureSketch(2)
>>> a.add(rng.normal(0, 1, (500, 2)))
>>> b.add(np.column_stack([rng.normal(0, 1, 500), rng.normal(2, 1, 500)]))
>>> sa, sb = a.summary(), b.summary()
>>> d = ks_distances(sa, sb)
>>> bool(d[0] < 0.15), bool(0.6 < d[1] < 0.8), drifted(sa, sb).tolist()
(True, True, [False, True])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

QUANTILES = 64  # points each CDF is read at


@dataclass(frozen=True)
class Summary:
    """A finalized sketch: rows seen, error bound, per-feature quantiles."""

    rows: int
    eps: float
    quantiles: np.ndarray

    @property
    def num_features(self) -> int:
        return int(self.quantiles.shape[0])


class FeatureSketch:
    """Quantile sketches of ``num_features`` features, and how many rows they saw."""

    def __init__(self, num_features: int, eps: float = 0.01) -> None:
        from tfx_bsl.sketches import QuantilesSketch

        if num_features <= 0 or not 0 < eps < 1:
            msg = f"need num_features > 0 and 0 < eps < 1, got {num_features!r}, {eps!r}"
            raise ValueError(msg)
        self.num_features = num_features
        self.eps = eps
        self.rows = 0
        self._sketch = QuantilesSketch(eps, 1 << 32, num_features)

    def add(self, features: np.ndarray) -> None:
        """Add a ``(rows, num_features)`` block of values."""
        values = np.ascontiguousarray(features, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.num_features:
            msg = f"expected (rows, {self.num_features}) values, got shape {values.shape!r}"
            raise ValueError(msg)
        if len(values):
            self._sketch.AddValues(pa.array(values.reshape(-1)))
            self.rows += len(values)

    def merge(self, other: FeatureSketch) -> None:
        if other.num_features != self.num_features:
            msg = f"cannot merge {other.num_features} features into {self.num_features}"
            raise ValueError(msg)
        self._sketch.Merge(other._sketch)
        self.rows += other.rows

    def summary(self, points: int = QUANTILES) -> Summary:
        """Its quantiles (``(num_features, points + 1)``, from the minimum to the
        maximum) and size. This finalizes the sketch: add and merge no more."""
        q = self._sketch.GetQuantiles(points)
        values = np.asarray(q.flatten(), dtype=np.float64).reshape(self.num_features, -1)
        return Summary(self.rows, self.eps, values)

    def __getstate__(self) -> dict:
        return {"n": self.num_features, "eps": self.eps, "rows": self.rows, "s": self._sketch}

    def __setstate__(self, state: dict) -> None:
        self.num_features, self.eps, self.rows = state["n"], state["eps"], state["rows"]
        self._sketch = state["s"]


def _cdf(quantiles: np.ndarray, at: np.ndarray) -> np.ndarray:
    levels = np.linspace(0.0, 1.0, len(quantiles))
    below = np.searchsorted(quantiles, at, side="right") - 1  # last quantile <= at
    return np.where(below < 0, 0.0, levels[np.clip(below, 0, len(levels) - 1)])


def ks_distances(a: Summary, b: Summary) -> np.ndarray:
    """Per feature: the Kolmogorov-Smirnov distance of the two sketched distributions."""
    qa, qb = a.quantiles, b.quantiles
    out = np.zeros(a.num_features)
    for f in range(a.num_features):
        at = np.union1d(qa[f], qb[f])
        out[f] = float(np.max(np.abs(_cdf(qa[f], at) - _cdf(qb[f], at))))
    return out


def critical_distance(rows_a: int, rows_b: int, alpha: float, eps: float) -> float:
    """The two-sample KS test's critical distance at level ``alpha``, plus the
    sketches' error and the quantile grid's resolution."""
    if rows_a == 0 or rows_b == 0:
        return math.inf
    c = math.sqrt(-math.log(alpha / 2) / 2)
    return c * math.sqrt((rows_a + rows_b) / (rows_a * rows_b)) + 2 * eps + 1 / QUANTILES


def drifted(a: Summary, b: Summary, alpha: float = 0.001) -> np.ndarray:
    """Per feature: whether ``b``'s distribution differs from ``a``'s (see module)."""
    limit = critical_distance(a.rows, b.rows, alpha, max(a.eps, b.eps))
    return ks_distances(a, b) > limit
