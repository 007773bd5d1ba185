"""Controllers that size micro-batches against a memory budget.

A stream processor survives load by backpressure: a sender only sends what the
receiver has room for. These controllers carry that into a training or inference
step. Before each micro-batch the caller asks :meth:`Controller.next_size` how many of
the remaining samples to take (each sample has a *cost*: its tokens, or 1 for a
fixed-shape row); after it, :meth:`Controller.observe` gets the step's measured
:class:`model.memory.MemoryReading`, or :meth:`Controller.on_oom` the allocator's
refusal. Every controller is a small object with ``snapshot()`` / ``restore()``.

- :class:`Unbounded` takes everything (today's behaviour: the only defence is the
  out-of-memory split the runner does);
- :class:`FixedSize` takes a fixed number of samples;
- :class:`AIMD` grows by a step while under budget, halves on an over-budget step or
  an out-of-memory error;
- :class:`PIDHeadroom` steers the logarithm of the size so the measured headroom
  (free fraction of the budget at the step's peak) sits at a set point;
- :class:`CreditBased` hands out the budget as credits of bytes, Flink-style: it
  learns the bytes a unit of cost takes from the measured peaks and admits samples
  while their predicted bytes fit in the credits; a sample larger than any seen is
  admitted alone first (slow start), so a burst is measured before it is trusted;
- :class:`Accumulating` wraps any of them and marks the micro-batches of one incoming
  batch as one optimizer step (gradient accumulation): memory adapts, the effective
  batch and so the learning stay what they were.

>>> from model.memory import MemoryReading
>>> c = AIMD(budget_bytes=1000, initial=8, step=4)
>>> c.next_size([1.0] * 100)
8
>>> c.observe(8, 8.0, MemoryReading(0, 500, 1000)); c.size
12
>>> c.observe(12, 12.0, MemoryReading(0, 1500, 1000)); c.size
6
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

from model.memory import MemoryReading, MemorySignal, is_out_of_memory

T = TypeVar("T")
Costs = Sequence[float] | np.ndarray  # the remaining samples' costs, in order


class Controller:
    """Sizes micro-batches; see the module doc for the protocol."""

    name: ClassVar[str] = "controller"
    accumulate = False

    def next_size(self, costs: Costs) -> int:
        """How many of the remaining samples (their ``costs``, in order) to take now."""
        raise NotImplementedError

    def observe(self, samples: int, cost: float, reading: MemoryReading) -> None:
        """A micro-batch of ``samples`` samples, total ``cost``, ran; its figures."""

    def on_oom(self, samples: int, cost: float) -> None:
        """A micro-batch of ``samples`` samples, total ``cost``, ran out of memory."""

    def snapshot(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None:
        del state

    def describe(self) -> str:
        return self.name


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        msg = f"{name} must be an int >= 1, got {value!r}"
        raise ValueError(msg)


class Unbounded(Controller):
    """Every remaining sample at once."""

    name = "unbounded"
    accumulate = True  # one incoming batch, one optimizer step, however it is split

    def next_size(self, costs: Costs) -> int:
        return max(1, len(costs))


class FixedSize(Controller):
    """``size`` samples per micro-batch, whatever they cost."""

    name = "fixed"

    def __init__(self, size: int) -> None:
        _check_size("size", size)
        self.size = size

    def next_size(self, costs: Costs) -> int:
        return max(1, min(self.size, len(costs)))

    def describe(self) -> str:
        return f"fixed({self.size})"


class _SampleSized(Controller):
    """A size in samples between ``min_size`` and ``max_size``."""

    def __init__(self, initial: int, min_size: int, max_size: int) -> None:
        for name, value in (("initial", initial), ("min_size", min_size), ("max_size", max_size)):
            _check_size(name, value)
        if not min_size <= initial <= max_size:
            msg = f"need min_size <= initial <= max_size, got {min_size}, {initial}, {max_size}"
            raise ValueError(msg)
        self.min_size, self.max_size = min_size, max_size
        self.size = initial
        self.ooms = 0
        self.over_budget = 0

    def next_size(self, costs: Costs) -> int:
        return max(1, min(self.size, len(costs)))

    def _clamp(self, size: float) -> int:
        return int(min(self.max_size, max(self.min_size, size)))

    def snapshot(self) -> dict[str, Any]:
        return {"size": self.size, "ooms": self.ooms, "over_budget": self.over_budget}

    def restore(self, state: dict[str, Any]) -> None:
        self.size, self.ooms = int(state["size"]), int(state["ooms"])
        self.over_budget = int(state["over_budget"])


class AIMD(_SampleSized):
    """Additive increase by ``step`` while under budget; multiplicative decrease by
    ``decrease`` on an over-budget step or an out-of-memory error."""

    name = "aimd"

    def __init__(
        self,
        budget_bytes: int,
        *,
        initial: int = 8,
        step: int = 2,
        decrease: float = 0.5,
        min_size: int = 1,
        max_size: int = 4096,
    ) -> None:
        super().__init__(initial, min_size, max_size)
        _check_size("step", step)
        if not 0 < decrease < 1:
            msg = f"decrease must be in (0, 1), got {decrease!r}"
            raise ValueError(msg)
        self.budget_bytes, self.step, self.decrease = budget_bytes, step, decrease

    def observe(self, samples: int, cost: float, reading: MemoryReading) -> None:
        if reading.peak_bytes > self.budget_bytes:
            self.over_budget += 1
            self.size = self._clamp(min(self.size, samples) * self.decrease)
        elif samples >= self.size:  # only a full-size step says growing is safe
            self.size = self._clamp(self.size + self.step)

    def on_oom(self, samples: int, cost: float) -> None:
        self.ooms += 1
        self.size = self._clamp(min(self.size, samples) * self.decrease)


class PIDHeadroom(_SampleSized):
    """A PID loop on ``log(size)`` that holds the headroom at ``setpoint``.

    The error is ``headroom - setpoint`` (positive: room to grow), clipped to [-1, 1];
    in velocity form the change of ``log(size)`` per step is
    ``kp (e - e1) + ki e + kd (e - 2 e1 + e2)`` (e1, e2: the errors one and two steps
    before), so there is no integral to wind up. An out-of-memory error halves the
    size.
    """

    name = "pid"

    def __init__(
        self,
        budget_bytes: int,
        *,
        setpoint: float = 0.25,
        kp: float = 0.5,
        ki: float = 0.5,
        kd: float = 0.05,
        initial: int = 8,
        min_size: int = 1,
        max_size: int = 4096,
    ) -> None:
        super().__init__(initial, min_size, max_size)
        if not 0 <= setpoint < 1:
            msg = f"setpoint must be in [0, 1), got {setpoint!r}"
            raise ValueError(msg)
        self.budget_bytes, self.setpoint = budget_bytes, setpoint
        self.kp, self.ki, self.kd = kp, ki, kd
        self.log_size = math.log(initial)
        self.errors = (0.0, 0.0)  # e1, e2

    def observe(self, samples: int, cost: float, reading: MemoryReading) -> None:
        if reading.peak_bytes > self.budget_bytes:
            self.over_budget += 1
        headroom = 1.0 - reading.peak_bytes / self.budget_bytes
        # a step smaller than the size says less about the size: scale its error
        share = min(1.0, samples / max(1, self.size))
        error = max(-1.0, min(1.0, headroom - self.setpoint)) * share
        e1, e2 = self.errors
        change = self.kp * (error - e1) + self.ki * error + self.kd * (error - 2 * e1 + e2)
        self.errors = (error, e1)
        self._set_log(self.log_size + change)

    def on_oom(self, samples: int, cost: float) -> None:
        self.ooms += 1
        self.errors = (0.0, 0.0)
        self._set_log(math.log(max(1, min(self.size, samples))) - math.log(2))

    def _set_log(self, value: float) -> None:
        lo, hi = math.log(self.min_size), math.log(self.max_size)
        self.log_size = min(hi, max(lo, value))
        self.size = self._clamp(round(math.exp(self.log_size)))

    def snapshot(self) -> dict[str, Any]:
        state = super().snapshot()
        state.update(log_size=self.log_size, errors=list(self.errors))
        return state

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.log_size = float(state["log_size"])
        e1, e2 = state["errors"]
        self.errors = (float(e1), float(e2))


class CreditBased(Controller):
    """The budget handed out as credits of bytes (see the module doc).

    A micro-batch is padded to its largest sample, so its cost is its size times its
    largest sample's cost (for fixed-shape rows, simply its size). The bytes a
    micro-batch of cost ``c`` takes are bounded by ``a + b * c``: a least-squares
    line through the last ``window`` measured ``(cost, peak)`` pairs, scaled up until
    it lies on or above every one of them (with a single cost level, the line through
    the origin and the steepest point). Credits are
    ``budget * (1 - margin)``; a micro-batch admits samples in order while the bound
    fits them, and always admits one. Like TCP's slow start, a micro-batch may cost at
    most ``growth`` times the most a measured one cost, so the line is never trusted
    far beyond what was measured. Until a step has been measured, and for a sample
    whose cost exceeds every measured sample's by more than ``probe_above``, a
    micro-batch holds just that one sample: a probe.
    """

    name = "credit"

    def __init__(
        self,
        budget_bytes: int,
        *,
        margin: float = 0.1,
        window: int = 64,
        probe_above: float = 1.25,
        growth: float = 2.0,
    ) -> None:
        _check_size("budget_bytes", budget_bytes)
        _check_size("window", window)
        if not 0 <= margin < 1:
            msg = f"margin must be in [0, 1), got {margin!r}"
            raise ValueError(msg)
        if probe_above < 1 or growth <= 1:
            msg = f"need probe_above >= 1 and growth > 1, got {probe_above!r}, {growth!r}"
            raise ValueError(msg)
        self.budget_bytes, self.margin, self.probe_above = budget_bytes, margin, probe_above
        self.growth = growth
        self.window = window
        self._points: deque[tuple[float, float]] = deque(maxlen=window)
        self._bound: tuple[float, float] | None = None
        self._admitted: tuple[int, float] = (0, 0.0)
        self.max_sample_cost = 0.0
        self.ooms = 0
        self.over_budget = 0
        self.probes = 0

    @property
    def credits(self) -> float:
        return self.budget_bytes * (1.0 - self.margin)

    def bound(self) -> tuple[float, float] | None:
        """``(a, b)``: a micro-batch of cost ``c`` is expected to take ``a + b * c``
        bytes at most; None before anything was measured."""
        if self._bound is None and self._points:
            self._bound = _upper_line(list(self._points))
        return self._bound

    def next_size(self, costs: Costs) -> int:
        bound = self.bound()
        unseen = self.max_sample_cost * self.probe_above
        if bound is None or costs[0] > unseen:
            self.probes += 1
            self._admitted = (1, costs[0])
            return 1
        fixed, per_cost = bound
        reach = self.growth * max(c for c, _ in self._points)
        taken, largest = 0, 0.0
        for cost in costs:
            padded = (taken + 1) * max(largest, cost)
            if taken and (
                cost > unseen or padded > reach or fixed + per_cost * padded > self.credits
            ):
                break  # over the credits or the reach, or a size that waits for its probe
            taken, largest = taken + 1, max(largest, cost)
        if taken < len(costs):  # as many micro-batches as needed, evenly filled
            taken = math.ceil(len(costs) / math.ceil(len(costs) / taken))
            largest = max(costs[:taken])
        self._admitted = (taken, largest)
        return taken

    def observe(self, samples: int, cost: float, reading: MemoryReading) -> None:
        if reading.peak_bytes > self.budget_bytes:
            self.over_budget += 1
        self._measured(cost, float(reading.peak_bytes))
        taken, largest = self._admitted
        # the largest sample is only known for the micro-batch the controller sized
        self.max_sample_cost = max(
            self.max_sample_cost, largest if samples == taken else cost / max(1, samples)
        )

    def on_oom(self, samples: int, cost: float) -> None:
        self.ooms += 1
        # it needed more than the cap, which is at least the budget: assume twice that
        self._measured(cost, 2.0 * self.budget_bytes)

    def _measured(self, cost: float, peak: float) -> None:
        if cost > 0:
            self._points.append((cost, peak))
            self._bound = None

    def snapshot(self) -> dict[str, Any]:
        return {
            "points": list(self._points),
            "admitted": self._admitted,
            "max_sample_cost": self.max_sample_cost,
            "ooms": self.ooms,
            "over_budget": self.over_budget,
            "probes": self.probes,
        }

    def restore(self, state: dict[str, Any]) -> None:
        points = ((float(c), float(p)) for c, p in state["points"])
        self._points = deque(points, maxlen=self.window)
        self._bound = None
        self._admitted = (int(state["admitted"][0]), float(state["admitted"][1]))
        self.max_sample_cost = float(state["max_sample_cost"])
        self.ooms, self.over_budget = int(state["ooms"]), int(state["over_budget"])
        self.probes = int(state["probes"])


def _upper_line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """A line ``a + b * c`` (a, b >= 0) at or above every ``(c, peak)`` point."""
    costs = [c for c, _ in points]
    n = len(points)
    mean_c = sum(costs) / n
    mean_p = sum(p for _, p in points) / n
    var = sum((c - mean_c) ** 2 for c in costs)
    slope = 0.0
    if var > (0.01 * mean_c) ** 2 * n:
        slope = max(0.0, sum((c - mean_c) * (p - mean_p) for c, p in points) / var)
    fixed = max(0.0, mean_p - slope * mean_c)
    if slope == 0.0 or fixed == 0.0:  # one cost level, or no sign of an overhead
        return 0.0, max(p / c for c, p in points)
    scale = max(1.0, max(p / (fixed + slope * c) for c, p in points))
    return fixed * scale, slope * scale


class Accumulating(Controller):
    """``inner`` sizes the micro-batches; they accumulate into one optimizer step."""

    name = "accumulate"
    accumulate = True

    def __init__(self, inner: Controller) -> None:
        self.inner = inner

    def next_size(self, costs: Costs) -> int:
        return self.inner.next_size(costs)

    def observe(self, samples: int, cost: float, reading: MemoryReading) -> None:
        self.inner.observe(samples, cost, reading)

    def on_oom(self, samples: int, cost: float) -> None:
        self.inner.on_oom(samples, cost)

    def snapshot(self) -> dict[str, Any]:
        return {"inner": self.inner.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        self.inner.restore(state["inner"])

    def describe(self) -> str:
        return f"accumulate({self.inner.describe()})"


def run_passes(
    costs: np.ndarray,
    controller: Controller,
    signal: MemorySignal,
    attempt: Callable[[int, int], T],
    done: Callable[[int, int, T, MemoryReading], None],
    *,
    limit: Callable[[], int] | None = None,
    on_oom: Callable[[int], None] | None = None,
) -> None:
    """Positions ``0..len(costs)`` in passes the controller sizes (at most ``limit()``),
    each ``attempt(a, b)`` measured by ``signal``, then ``done(a, b, result, reading)``
    before the next pass. An out-of-memory error tells the controller (and
    ``on_oom(rows)``) and retries the range in halves until it fits; a single position
    that does not fit raises. A pass costs its size times its largest position's cost
    (padded). Handler passes, memory-controlled runs and budgeted training share it."""
    n = len(costs)
    start, cap, cap_until = 0, n, 0
    while start < n:
        size = min(controller.next_size(costs[start:]), n - start)
        if limit is not None:
            size = max(1, min(size, limit()))
        if start < cap_until:
            size = min(size, cap)
        stop = start + size
        cost = size * float(costs[start:stop].max())
        try:
            with signal.step():
                result = attempt(start, stop)
        except Exception as error:
            if not is_out_of_memory(error) or size <= 1:
                raise
            controller.on_oom(size, cost)
            if on_oom is not None:
                on_oom(size)
            cap, cap_until = max(1, size // 2), max(cap_until, stop)
            continue
        reading = signal.reading()
        controller.observe(size, cost, reading)
        done(start, stop, result, reading)
        start = stop


STRATEGIES = ("unbounded", "fixed", "aimd", "pid", "credit", "accumulate")


def make_controller(strategy: str, budget_bytes: int | None, *, fixed_size: int = 32) -> Controller:
    """A controller by name (``--backpressure``): one of :data:`STRATEGIES`.

    ``accumulate`` is credit-based sizing with gradient accumulation. Every strategy but
    ``unbounded`` and ``fixed`` needs a budget.
    """
    if strategy == "unbounded":
        return Unbounded()
    if strategy == "fixed":
        return FixedSize(fixed_size)
    if strategy not in STRATEGIES:
        msg = f"backpressure strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        raise ValueError(msg)
    if budget_bytes is None:
        msg = f"backpressure strategy {strategy!r} needs a memory budget"
        raise ValueError(msg)
    if strategy == "aimd":
        return AIMD(budget_bytes)
    if strategy == "pid":
        return PIDHeadroom(budget_bytes)
    if strategy == "credit":
        return CreditBased(budget_bytes)
    return Accumulating(CreditBased(budget_bytes))
