"""ADWIN, adaptive windowing (Bifet and Gavalda, 2007), over micro-batches.

The detector keeps a window of recent values as an exponential histogram (row ``r``
holds up to ``max_buckets`` buckets of ``2^r`` values, each kept as their sum) and,
every ``clock`` values, tries every boundary between buckets
as a split of the window into an older and a newer part: when both hold at least
``min_window`` values and their means differ by more than the Hoeffding-style bound

    eps = sqrt(2 m var dp) + 2/3 dp m,   m = 1/(n0 - min_window + 1) + 1/(n1 - min_window + 1),

with ``dp = ln(2 ln(width) / delta)`` and ``var`` the window's variance, it is a
change: an alarm, after which the detector starts afresh, as
:class:`model.drift.PageHinkley` and :class:`model.drift.DDM` do. The defaults are
River's (delta 0.002, clock 32, 5 buckets a row, sub-windows of 5, 10 values first).

:meth:`ADWIN.update_many` takes a whole micro-batch in one call of a C kernel
(:file:`drift_kernel.c`, built like the MLP kernels: :mod:`model.learn.native`);
without a compiler the same algorithm runs here in Python, value by value, with the
same alarms.

>>> adwin = ADWIN()
>>> rng = np.random.default_rng(0)
>>> errors = np.r_[rng.random(2_000) < 0.1, rng.random(2_000) < 0.5].astype(float)
>>> alarms = adwin.update_many(errors)
>>> [int(i) for i in alarms.drifts]  # the change is at 2,000
[2047]

Its state is its histogram, small and picklable:

>>> resumed = ADWIN()
>>> resumed.restore(adwin.snapshot())
>>> later = errors[:500]
>>> resumed.update_many(later).drifts.tolist() == adwin.update_many(later).drifts.tolist()
True
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.alarms import Alarms
from model.learn import native

SOURCE = Path(__file__).with_name("drift_kernel.c")
ROWS = 64  # as ADWIN_ROWS in drift_kernel.c: 2^63 values at most
_p, _i64, _i32, _f64 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_double
_NONE = np.zeros(0, np.int64)  # ADWIN gives no warnings
SIGNATURES: native.Signatures = {
    "adwin_update_many": (_i64, [_p, _i64, _p, _p, _i32, _i64, _f64, _f64, _f64, _p, _p]),
}


@dataclass
class ADWIN:
    """Adaptive windowing for a change in the mean of a series of values in [0, 1]
    (e.g. prequential errors); see the module docstring."""

    delta: float = 0.002
    clock: int = 32
    max_buckets: int = 5
    min_window: int = 5
    grace: int = 10
    use_native: bool | None = None  # None: the C kernel where it builds
    ints: np.ndarray = field(init=False, repr=False)
    doubles: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.delta < 1:
            msg = f"delta must be in (0, 1), got {self.delta!r}"
            raise ValueError(msg)
        if not (
            self.clock >= 1
            and 2 <= self.max_buckets <= 16
            and self.min_window >= 1
            and self.grace >= 1
        ):  # fmt: skip (the bound needs ln(width) > 0)
            msg = (
                "need clock >= 1, 2 <= max_buckets <= 16, min_window >= 1, grace >= 1, got "
                f"{self.clock!r}, {self.max_buckets!r}, {self.min_window!r}, {self.grace!r}"
            )
            raise ValueError(msg)
        self._lib = None if self.use_native is False else native.compiled(SOURCE, SIGNATURES)
        if self.use_native and self._lib is None:
            msg = "the C kernel of ADWIN is unavailable (see the log for why)"
            raise RuntimeError(msg)
        self.ints = np.zeros(2 + ROWS, np.int64)
        self.doubles = np.zeros(3 + ROWS * self.slots, np.float64)
        # addresses read once (reading one costs more than the kernel's work on a
        # small batch), and the alarm buffers, grown on demand
        self._state = self.ints.ctypes.data, self.doubles.ctypes.data
        self._out = np.empty(0, np.int64), np.empty(0, np.float64)
        self._out_ptrs = (0, 0)

    @property
    def slots(self) -> int:
        return self.max_buckets + 1

    @property
    def width(self) -> int:
        """How many values the window holds."""
        return int(self.doubles[0])

    def _reset(self) -> None:
        self.ints[:] = 0
        self.doubles[:] = 0.0

    def update(self, value: float) -> bool:
        """Add one value; True when it completes a drift alarm."""
        return bool(len(self.update_many(np.array([value], np.float64)).drifts))

    def update_many(self, values: np.ndarray) -> Alarms:
        """Add a batch of values in order; where the alarms are (see :class:`Alarms`)."""
        x = np.ascontiguousarray(values, dtype=np.float64)
        if len(x) > len(self._out[0]):
            self._out = np.empty(2 * len(x), np.int64), np.empty(2 * len(x), np.float64)
            self._out_ptrs = self._out[0].ctypes.data, self._out[1].ctypes.data
        drifts, stats = self._out
        if self._lib is not None:
            found = self._lib.adwin_update_many(
                x.ctypes.data, len(x), *self._state, self.max_buckets, self.clock,
                float(self.grace), float(self.min_window), self.delta, *self._out_ptrs,
            )  # fmt: skip
        else:
            found = self._update_python(x, drifts, stats)
        return Alarms(drifts[:found].copy(), _NONE, stats[:found].copy())

    # -- the same algorithm in Python (the kernel's reference) ---------------------------
    def _update_python(self, x: np.ndarray, drifts: np.ndarray, stats: np.ndarray) -> int:
        found = 0
        for i, value in enumerate(x.tolist()):
            self._insert(value)
            self.ints[1] += 1
            if self.ints[1] % self.clock == 0 and self.doubles[0] > self.grace:
                stat = self._check()
                if stat is not None:
                    drifts[found], stats[found] = i, stat
                    found += 1
                    self._reset()
        return found

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Views: buckets per row, and the buckets' sums."""
        return self.ints[2:], self.doubles[3:].reshape(ROWS, self.slots)

    def _insert(self, value: float) -> None:
        count, sums = self._rows()
        self.ints[0] = max(self.ints[0], 1)
        sums[0, count[0]] = value
        count[0] += 1
        self.doubles[:3] += (1.0, value, value * value)
        r = 0
        while r < ROWS - 1 and count[r] == self.slots:
            sums[r + 1, count[r + 1]] = sums[r, 0] + sums[r, 1]
            count[r + 1] += 1
            self.ints[0] = max(self.ints[0], r + 2)
            sums[r, :-2] = sums[r, 2:].copy()
            sums[r, -2:] = 0.0
            count[r] -= 2
            r += 1

    def _check(self) -> float | None:
        count, sums = self._rows()
        width, total, squares = (float(v) for v in self.doubles[:3])
        dp = math.log(2.0 * math.log(width) / self.delta)
        mean = total / width
        var = squares / width - mean * mean
        n0 = u0 = 0.0
        n1, u1 = width, total
        for r in range(int(self.ints[0]) - 1, -1, -1):
            n = math.ldexp(1.0, r)
            for k in range(int(count[r])):
                if r == 0 and k == count[0] - 1:
                    return None
                n0 += n
                n1 -= n
                u0 += float(sums[r, k])
                u1 -= float(sums[r, k])
                if n0 < self.min_window or n1 < self.min_window:
                    continue
                # gap > eps, multiplied through by n0 n1 a b (all > 0), as the kernel has it
                a, b = n0 - self.min_window + 1.0, n1 - self.min_window + 1.0
                p, d = n0 * n1, abs(u0 * n1 - u1 * n0)
                over = d * a * b - 2.0 / 3.0 * dp * (a + b) * p
                if over > 0.0 and over * over > 2.0 * (a + b) * a * b * var * dp * p * p:
                    return d / p
        return None

    # -- state -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The histogram (the rows in use) and the counters; the settings are
        configuration, not state."""
        rows = int(self.ints[0])
        count, sums = self._rows()
        return {
            "ticks": int(self.ints[1]),
            "counts": count[:rows].copy(),
            "moments": self.doubles[:3].copy(),
            "sums": sums[:rows].copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (of a detector with the same settings)."""
        self._reset()
        rows = len(state["counts"])
        count, sums = self._rows()
        self.ints[0], self.ints[1] = rows, state["ticks"]
        count[:rows] = state["counts"]
        self.doubles[:3] = state["moments"]
        sums[:rows] = state["sums"]
