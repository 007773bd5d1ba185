"""Combining model deltas from devices: FedAvg, buffered asynchronous, personalization.

A *delta* is a device's flat parameter change over a round (its model after the
round's local steps minus the global model it started from). :func:`fedavg` averages
deltas weighted by the samples behind each (McMahan et al., 2017); a device with no
samples weighs nothing. :class:`BufferedAsync` (FedBuff, Nguyen et al., 2022) takes
deltas as they come, each computed from a global version that may be ``staleness``
versions old, and applies their weighted average once ``buffer`` of them arrived, a
delta's weight its samples times ``(1 + staleness) ** -exponent``.
:func:`personalize` mixes a device's local weights with the global ones.

>>> fedavg([np.array([1.0, 0.0]), np.array([0.0, 3.0])], [1, 3]).tolist()
[0.25, 2.25]
>>> round(staleness_weight(3, 0.5), 3)
0.5
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def fedavg(deltas: Sequence[np.ndarray], samples: Sequence[float]) -> np.ndarray:
    """The samples-weighted mean of ``deltas``; zeros when no device had samples."""
    if len(deltas) != len(samples):
        msg = f"{len(deltas)} deltas but {len(samples)} sample counts"
        raise ValueError(msg)
    if not deltas:
        msg = "fedavg needs at least one delta"
        raise ValueError(msg)
    weights = np.asarray(samples, np.float64)
    if (weights < 0).any():
        msg = f"sample counts must be >= 0, got {list(samples)!r}"
        raise ValueError(msg)
    total = weights.sum()
    if total == 0:
        return np.zeros_like(np.asarray(deltas[0], np.float64))
    stacked = np.stack([np.asarray(d, np.float64) for d in deltas])
    return (weights[:, None] * stacked).sum(0) / total


def staleness_weight(staleness: int, exponent: float = 0.5) -> float:
    """``(1 + staleness) ** -exponent``: a delta computed from an older global counts
    less (polynomial staleness, as in FedAsync and FedBuff)."""
    if staleness < 0 or exponent < 0:
        msg = f"need staleness >= 0 and exponent >= 0, got {staleness!r}, {exponent!r}"
        raise ValueError(msg)
    return float((1 + staleness) ** -exponent)


@dataclass
class BufferedAsync:
    """Deltas applied in buffers of ``buffer``, weighted by samples and staleness."""

    buffer: int = 4
    exponent: float = 0.5
    server_lr: float = 1.0
    version: int = 0  # global versions made so far
    pending: list[tuple[np.ndarray, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.buffer < 1 or self.server_lr <= 0:
            msg = f"need buffer >= 1 and server_lr > 0, got {self.buffer!r}, {self.server_lr!r}"
            raise ValueError(msg)

    def add(self, delta: np.ndarray, samples: float, based_on: int) -> np.ndarray | None:
        """A delta computed from global version ``based_on``; the step to apply to the
        global model when the buffer is full (and a new version made), else None."""
        if based_on > self.version:
            msg = f"a delta from version {based_on} cannot come before version {self.version}"
            raise ValueError(msg)
        weight = samples * staleness_weight(self.version - based_on, self.exponent)
        self.pending.append((np.asarray(delta, np.float64), weight))
        if len(self.pending) < self.buffer:
            return None
        step = fedavg([d for d, _ in self.pending], [w for _, w in self.pending])
        self.pending = []
        self.version += 1
        return self.server_lr * step

    def snapshot(self) -> dict[str, Any]:
        return {"version": self.version, "pending": [(d.copy(), w) for d, w in self.pending]}

    def restore(self, state: dict[str, Any]) -> None:
        self.version = int(state["version"])
        self.pending = [(np.asarray(d, np.float64), float(w)) for d, w in state["pending"]]


def personalize(global_weights: np.ndarray, local: np.ndarray, mix: float) -> np.ndarray:
    """``mix`` of the device's own weights, the rest global (0: the global model)."""
    if not 0 <= mix <= 1:
        msg = f"mix must be in [0, 1], got {mix!r}"
        raise ValueError(msg)
    return (1 - mix) * np.asarray(global_weights) + mix * np.asarray(local)
