"""Adaptive batch sizing: additive increase, multiplicative decrease (AIMD).

The controller picks how many rows to score per forward pass. While forward passes
finish under the latency target it grows the size by ``step``; when one takes longer
it cuts the size by ``decrease``. An out-of-memory error lowers the *ceiling* too, so
the size never climbs back to what failed. Pure Python, deterministic.

>>> c = AdaptiveBatchSize(target_latency_s=0.01, initial=64, max_size=256, step=64)
>>> c.record(64, 0.002); c.size
128
>>> c.record(128, 0.05); c.size
64
>>> c.on_oom(64); c.size, c.ceiling
(32, 32)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AdaptiveBatchSize:
    """AIMD batch-size controller bounded by ``[min_size, ceiling]``."""

    target_latency_s: float = 0.05
    initial: int = 256
    max_size: int = 4096
    min_size: int = 1
    step: int = 64
    decrease: float = 0.5
    size: int = field(init=False)
    ceiling: int = field(init=False)
    ooms: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if self.target_latency_s <= 0:
            msg = f"target_latency_s must be > 0, got {self.target_latency_s!r}"
            raise ValueError(msg)
        if not 1 <= self.min_size <= self.initial <= self.max_size:
            msg = (
                "need 1 <= min_size <= initial <= max_size, got "
                f"{self.min_size!r}, {self.initial!r}, {self.max_size!r}"
            )
            raise ValueError(msg)
        if self.step <= 0 or not 0 < self.decrease < 1:
            msg = f"need step > 0 and 0 < decrease < 1, got {self.step!r}, {self.decrease!r}"
            raise ValueError(msg)
        self.size = self.initial
        self.ceiling = self.max_size

    def record(self, rows: int, latency_s: float) -> None:
        """Feed back one forward pass of ``rows`` rows that took ``latency_s``."""
        if latency_s > self.target_latency_s:
            self.size = max(self.min_size, int(min(self.size, rows) * self.decrease))
        elif rows >= self.size:  # only a full-size pass says the size is safe to grow
            self.size = min(self.ceiling, self.size + self.step)

    def on_oom(self, rows: int) -> None:
        """A pass of ``rows`` rows ran out of memory: halve below it, for good."""
        self.ooms += 1
        self.ceiling = max(self.min_size, rows // 2)
        self.size = min(self.size, self.ceiling)

    def snapshot(self) -> dict[str, int]:
        """The size, the ceiling an out-of-memory error left and the count of them."""
        return {"size": self.size, "ceiling": self.ceiling, "ooms": self.ooms}

    def restore(self, state: dict[str, int]) -> None:
        """Continue from a :meth:`snapshot`."""
        self.size, self.ceiling, self.ooms = state["size"], state["ceiling"], state["ooms"]
