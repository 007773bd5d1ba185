"""Reservoir replay: a uniform, seeded sample of every row a learner has seen.

Mixing a few of these rows into every step keeps old concepts in the gradient after
the stream has moved on (:class:`model.learn.learner.IncrementalLearner`'s
``replay_size``).

>>> import numpy as np
>>> r = Reservoir(capacity=3, seed=0)
>>> r.add(np.arange(10, dtype=np.float32)[:, None], np.arange(10))
>>> r.size, r.seen
(3, 10)
>>> again = Reservoir(capacity=3, seed=1)
>>> again.restore(r.snapshot())
>>> bool((again.sample(2)[1] == r.sample(2)[1]).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Reservoir:
    """Uniform sample of all rows seen so far (Vitter's algorithm R), seeded."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng([seed, 7])
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.seen = 0
        self.size = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Offer every row of ``x`` (labels ``y``) to the sample."""
        if self.capacity == 0 or len(x) == 0:
            return
        if self.x is None:
            self.x = np.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self.y = np.empty(self.capacity, dtype=y.dtype)
        assert self.y is not None
        n = len(x)
        fill = min(n, self.capacity - self.size)
        if fill:
            self.x[self.size : self.size + fill] = x[:fill]
            self.y[self.size : self.size + fill] = y[:fill]
            self.size += fill
        if n > fill:
            # Row t (t rows seen before it) replaces slot j ~ U{0..t} when j < capacity;
            # later rows win a shared slot, as in the sequential algorithm.
            highs = self.seen + fill + np.arange(n - fill) + 1
            slots = self.rng.integers(0, highs)
            keep = slots < self.capacity
            self.x[slots[keep]] = x[fill:][keep]
            self.y[slots[keep]] = y[fill:][keep]
        self.seen += n

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """``n`` rows drawn with replacement (fewer if fewer are held), or None if empty."""
        if self.size == 0 or self.x is None or self.y is None:
            return None
        idx = self.rng.integers(0, self.size, min(n, self.size))
        return self.x[idx], self.y[idx]

    def snapshot(self) -> dict[str, Any]:
        """The rows held (copies), the count seen and the random state."""
        return {
            "x": None if self.x is None else self.x[: self.size].copy(),
            "y": None if self.y is None else self.y[: self.size].copy(),
            "seen": self.seen,
            "rng": self.rng.bit_generator.state,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (of a reservoir of the same capacity)."""
        self.seen, self.size = state["seen"], 0 if state["x"] is None else len(state["x"])
        self.rng.bit_generator.state = state["rng"]
        self.x = self.y = None
        if state["x"] is not None:
            self.x = np.empty((self.capacity, *state["x"].shape[1:]), dtype=state["x"].dtype)
            self.y = np.empty(self.capacity, dtype=state["y"].dtype)
            self.x[: self.size], self.y[: self.size] = state["x"], state["y"]
