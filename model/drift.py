"""Drift detection on a stream of values (e.g. per-batch prequential error rates).

:class:`PageHinkley` raises an alarm when the running mean of the values rises by more
than ``threshold`` above its minimum (Page's CUSUM test for an increase in mean);
after an alarm it starts afresh. Pure Python.

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

from dataclasses import dataclass, field


@dataclass
class PageHinkley:
    """Page-Hinkley test for an increase in the mean of a series."""

    delta: float = 0.005
    threshold: float = 1.0
    min_samples: int = 5
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

    def update(self, value: float) -> bool:
        """Add one value; True when it completes a drift alarm."""
        self.n += 1
        self.mean += (value - self.mean) / self.n
        self.cumulative += value - self.mean - self.delta
        self.minimum = min(self.minimum, self.cumulative)
        if self.n >= self.min_samples and self.cumulative - self.minimum > self.threshold:
            self.n, self.mean, self.cumulative, self.minimum = 0, 0.0, 0.0, 0.0
            return True
        return False

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
