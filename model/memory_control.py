"""Memory control for the pipeline's handler and learner: a config and its figures.

:class:`MemoryConfig` is what ``--backpressure STRATEGY`` and ``--memory-budget
SIZE`` set (picklable, validated); :meth:`MemoryConfig.build` makes the
:class:`MemoryControl` a worker uses on its device: a controller
(:mod:`model.backpressure`), a memory signal (:mod:`model.memory`) and running
:class:`MemoryFigures`.

- :meth:`MemoryControl.run` serves inference: ``n`` rows in passes the controller
  sizes (each row costs 1), each measured; an out-of-memory error halves the pass
  and retries it (a single row that does not fit is an error), so no row is lost;
- :meth:`MemoryControl.trainer` serves learning (:class:`model.budgeted.BudgetedTrainer`).

>>> control = MemoryConfig("credit", budget_bytes=parse_bytes("64M")).build("cpu")
>>> import torch
>>> x = torch.ones(1000, 8)
>>> parts = control.run(len(x), lambda a, b: (x[a:b] * 2).sum(1))
>>> sum(len(p) for p in parts), control.figures.over_budget
(1000, 0)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from model.backpressure import STRATEGIES, Controller, make_controller, run_passes
from model.budgeted import BudgetedTrainer
from model.memory import MemoryReading, MemorySignal, memory_signal

T = TypeVar("T")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1.5GiB"``, ``"65536"`` to bytes (powers of 1024).

    >>> parse_bytes("512M"), parse_bytes("2gib"), parse_bytes("100")
    (536870912, 2147483648, 100)
    """
    match = _SIZE.match(str(text))
    if match is None:
        msg = f"a memory size is a number with an optional K, M, G or T, got {text!r}"
        raise ValueError(msg)
    value = round(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if value <= 0:
        msg = f"a memory size must be > 0, got {text!r}"
        raise ValueError(msg)
    return value


@dataclass(frozen=True)
class MemoryConfig:
    """A strategy (one of :data:`model.backpressure.STRATEGIES`), the budget it aims
    under, and optionally a hard cap per step (where the signal refuses memory)."""

    strategy: str = "unbounded"
    budget_bytes: int | None = None
    cap_bytes: int | None = None
    fixed_size: int = 32

    def __post_init__(self) -> None:
        for name in ("budget_bytes", "cap_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                msg = f"{name} must be an int > 0 or None, got {value!r}"
                raise ValueError(msg)
        cap, budget = self.cap_bytes, self.budget_bytes
        if cap is not None and budget is not None and cap < budget:
            msg = f"the cap ({cap}) must not be below the budget ({budget})"
            raise ValueError(msg)
        self.controller()  # a ValueError naming a bad strategy or a missing budget

    @property
    def enabled(self) -> bool:
        """Whether anything is measured: a strategy other than ``unbounded``, or a
        budget to count violations against."""
        return self.strategy != "unbounded" or self.budget_bytes is not None

    def controller(self) -> Controller:
        return make_controller(self.strategy, self.budget_bytes, fixed_size=self.fixed_size)

    def build(self, device: torch.device | str) -> MemoryControl:
        signal = memory_signal(device, self.budget_bytes, cap_bytes=self.cap_bytes)
        return MemoryControl(self, self.controller(), signal)

    def describe(self) -> str:
        budget = "no budget" if self.budget_bytes is None else f"budget {_mib(self.budget_bytes)}"
        return f"{self.strategy}, {budget}"


@dataclass
class MemoryFigures:
    """Running totals of the measured steps (passes or micro-batches)."""

    steps: int = 0
    ooms: int = 0
    over_budget: int = 0
    peak_bytes: int = 0

    def add(self, steps: int, ooms: int, over_budget: int, peak_bytes: int) -> None:
        self.steps += steps
        self.ooms += ooms
        self.over_budget += over_budget
        self.peak_bytes = max(self.peak_bytes, peak_bytes)

    def drain(self) -> MemoryFigures:
        """The totals since the last call (the peak too), and start again."""
        out = MemoryFigures(self.steps, self.ooms, self.over_budget, self.peak_bytes)
        self.steps = self.ooms = self.over_budget = self.peak_bytes = 0
        return out


class MemoryControl:
    """A controller, a signal and their figures, for one worker and device."""

    def __init__(self, config: MemoryConfig, controller: Controller, signal: MemorySignal) -> None:
        self.config, self.controller, self.signal = config, controller, signal
        self.figures = MemoryFigures()

    def run(
        self,
        n: int,
        work: Callable[[int, int], T],
        *,
        limit: Callable[[], int] | None = None,
        on_oom: Callable[[int], None] | None = None,
    ) -> list[T]:
        """``work(a, b)`` on rows ``a`` to ``b`` for passes covering ``0..n`` in order,
        sized by the controller (and at most ``limit()``); their results in order.
        ``on_oom(rows)`` hears of every out-of-memory error too."""
        out: list[T] = []

        def done(a: int, b: int, result: T, reading: MemoryReading) -> None:
            self.figures.add(1, 0, int(reading.over_budget), reading.peak_bytes)
            out.append(result)

        def oom(rows: int) -> None:
            self.figures.add(0, 1, 0, 0)
            if on_oom is not None:
                on_oom(rows)

        run_passes(np.ones(n), self.controller, self.signal, work, done, limit=limit, on_oom=oom)
        return out

    def trainer(
        self, params: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> BudgetedTrainer:
        return BudgetedTrainer(params, optimizer, self.controller, self.signal)


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


__all__ = ["STRATEGIES", "MemoryConfig", "MemoryControl", "MemoryFigures", "parse_bytes"]
