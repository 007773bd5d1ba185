"""Running per-feature standardization for incremental learners.

>>> import numpy as np
>>> scaler = RunningScaler()
>>> scaler.update(np.array([[1.0], [3.0]], np.float32))
>>> scaler.transform(np.array([[2.0]], np.float32)).tolist()
[[0.0]]
>>> again = RunningScaler()
>>> again.restore(scaler.snapshot())
>>> again.n, again.moments()[0].tolist()
(2, [2.0])
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RunningScaler:
    """Per-feature running mean and variance (Chan/Welford), for standardizing.

    ``mean`` and ``m2`` are float64 arrays owned by the scaler; the C kernels
    (:mod:`model.learn.fused`) update them in place, then call :meth:`folded`.
    """

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self._scale: tuple[np.ndarray, np.ndarray] | None = None  # float32 (mean, std)
        self._moments: tuple[np.ndarray, np.ndarray] | None = None
        self._ptrs: tuple[int, int] | None = None

    @property
    def ready(self) -> bool:
        """Whether it has seen two rows, so scaling uses its moments."""
        return self.n >= 2 and self.mean is not None and self.m2 is not None

    def update(self, x: np.ndarray) -> None:
        if len(x) == 0:
            return
        n_b = len(x)
        mean_b = x.sum(axis=0, dtype=np.float64) / n_b
        d = x - mean_b  # float64
        m2_b = np.einsum("ij,ij->j", d, d)
        if self.mean is None or self.m2 is None:
            self._set(n_b, mean_b, m2_b)
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self._set(n, self.mean + delta * n_b / n, self.m2 + m2_b + delta**2 * self.n * n_b / n)

    def _set(self, n: int, mean: np.ndarray | None, m2: np.ndarray | None) -> None:
        self.n, self.mean, self.m2 = n, mean, m2
        self._scale = self._moments = self._ptrs = None

    def folded(self, rows: int) -> None:
        """Account for ``rows`` rows folded into ``mean`` and ``m2`` in place."""
        self.n += rows
        self._scale = self._moments = None

    def addresses(self) -> tuple[int, int]:
        """Addresses of ``mean`` and ``m2`` (for the C kernels; the scaler is ready)."""
        if self._ptrs is None:
            assert self.mean is not None and self.m2 is not None
            self._ptrs = self.mean.ctypes.data, self.m2.ctypes.data
        return self._ptrs

    def moments(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(mean, std) used for scaling, or None before two rows have been seen."""
        if self._moments is None:
            if not self.ready:
                return None
            assert self.mean is not None and self.m2 is not None
            self._moments = self.mean.copy(), np.sqrt(self.m2 / (self.n - 1)) + 1e-6
        return self._moments

    def transform(self, x: np.ndarray) -> np.ndarray:
        if self._scale is None:
            moments = self.moments()
            if moments is None:
                return x
            self._scale = (moments[0].astype(np.float32), moments[1].astype(np.float32))
        mean, std = self._scale
        out = x - mean
        out /= std
        return out

    def scale_and_fold(self, batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``rows`` scaled by the moments of the rows seen before ``batch`` (by
        ``batch``'s own when there were none yet), then ``batch`` folded into the
        moments: a prediction never uses statistics of the rows it scores that the
        learning step on them would not also use."""
        if not self.ready:
            self.update(batch)
            return self.transform(rows)
        out = self.transform(rows)
        self.update(batch)
        return out

    def snapshot(self) -> tuple[int, Any, Any]:
        """``(n, mean, m2)``; the arrays are live (the caller copies or serializes)."""
        return self.n, self.mean, self.m2

    def restore(self, state: tuple[int, Any, Any]) -> None:
        """Continue from a :meth:`snapshot` (copied: the scaler updates in place)."""
        n, mean, m2 = state
        self._set(n, _owned(mean), _owned(m2))


def _owned(a: Any) -> np.ndarray | None:
    """A float64 copy this scaler may update in place."""
    return None if a is None else np.array(a, dtype=np.float64)
