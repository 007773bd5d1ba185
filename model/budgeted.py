"""Training steps under a memory budget: a controller sizes the micro-batches.

:meth:`BudgetedTrainer.fit` takes one incoming batch (the cost of each sample, and a
function giving the mean loss of a slice of it) and trains on it in micro-batches
that its :class:`model.backpressure.Controller` sizes, each measured by a
:class:`model.memory.MemorySignal`:

- a controller that accumulates turns the micro-batches of a batch into *one*
  optimizer step: each micro-batch's mean loss is weighted by its share of the batch
  and its gradients (``torch.autograd.grad``, so a failed micro-batch leaves nothing
  behind) are summed, which equals the gradient of the whole batch's mean loss;
- otherwise every micro-batch is its own optimizer step;
- an out-of-memory error (CUDA's, or a :class:`model.memory.TensorMemory` cap's) is
  reported to the controller, and the range is retried in halves until it fits; no
  sample is skipped (a single sample that does not fit is an error);
- when the micro-batches accumulate, their order within the batch is free (a sum does
  not care), so with ``group_by_cost`` (the default) the samples are taken largest
  first: micro-batches of like-sized samples pad less and fit more;
- a step whose measured peak exceeds the budget counts as over budget;
- a sample's cost is what it takes alone (its tokens, or 1 for a fixed-shape row); a
  micro-batch is taken to be padded to its largest sample, so it costs its size times
  that sample's cost.

>>> import torch
>>> from model.backpressure import Accumulating, FixedSize
>>> from model.memory import TensorMemory
>>> w = torch.nn.Parameter(torch.zeros(3))
>>> x, y = torch.randn(10, 3), torch.randn(10)
>>> trainer = BudgetedTrainer(
...     [w], torch.optim.SGD([w], lr=0.1), Accumulating(FixedSize(4)), TensorMemory(1 << 20)
... )
>>> report = trainer.fit([1.0] * 10, lambda rows: ((x[rows] @ w - y[rows]) ** 2).mean())
>>> report.samples, report.micro_batches, report.optimizer_steps
(10, 3, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model.backpressure import Controller, run_passes
from model.memory import MemoryReading, MemorySignal


@dataclass
class BatchReport:
    """What :meth:`BudgetedTrainer.fit` did with one batch; ``sizes`` and ``peaks``
    per completed micro-batch."""

    samples: int = 0
    micro_batches: int = 0
    optimizer_steps: int = 0
    ooms: int = 0
    over_budget: int = 0
    peak_bytes: int = 0
    loss: float = 0.0
    sizes: list[int] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return self.ooms + self.over_budget


class BudgetedTrainer:
    """Trains ``params`` with ``optimizer`` in micro-batches sized by ``controller``."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        controller: Controller,
        signal: MemorySignal,
        *,
        group_by_cost: bool = True,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.optimizer = optimizer
        self.controller = controller
        self.signal = signal
        self.group_by_cost = group_by_cost

    def fit(
        self, costs: Sequence[float], loss_of: Callable[[list[int]], torch.Tensor]
    ) -> BatchReport:
        """Train on one batch of ``len(costs)`` samples; ``loss_of(rows)`` is the mean
        loss of the samples at the indices ``rows``."""
        accumulate = self.controller.accumulate
        report, total = self._run(costs, loss_of, accumulate, 1.0)
        if total is not None:
            self._apply(total)
            report.optimizer_steps += 1
        return report

    def accumulate(
        self,
        costs: Sequence[float],
        loss_of: Callable[[list[int]], torch.Tensor],
        scale: float = 1.0,
    ) -> BatchReport:
        """Add ``scale`` times the gradient of the batch's mean loss to each
        parameter's ``.grad``, in micro-batches, without an optimizer step (the caller
        steps when it will: an online learner's step is its own). Whatever the
        controller, the micro-batches accumulate: memory changes, the gradient not."""
        report, total = self._run(costs, loss_of, True, scale)
        if total is not None:
            for p, g in zip(self.params, total, strict=True):
                if p.grad is None:
                    p.grad = g
                else:
                    p.grad.add_(g)
        return report

    def _run(
        self,
        costs: Sequence[float],
        loss_of: Callable[[list[int]], torch.Tensor],
        accumulate: bool,
        scale: float,
    ) -> tuple[BatchReport, list[torch.Tensor] | None]:
        n = len(costs)
        report = BatchReport(samples=n)
        if n == 0:
            return report, None
        order = list(range(n))
        if accumulate and self.group_by_cost:
            order.sort(key=lambda i: -costs[i])  # largest first; stable
        ordered = np.array([float(costs[i]) for i in order])
        total = [torch.zeros_like(p) for p in self.params] if accumulate else None

        def attempt(a: int, b: int) -> tuple[float, tuple[torch.Tensor | None, ...]]:
            weight = scale * (b - a) / n if accumulate else scale
            loss = loss_of(order[a:b])
            grads = torch.autograd.grad(loss * weight, self.params, allow_unused=True)
            return float(loss.detach()), grads  # the graph goes with the attempt

        def done(a: int, b: int, result: tuple[float, Any], reading: MemoryReading) -> None:
            loss, grads = result  # only a pass that went through changes anything
            if total is not None:
                for acc, g in zip(total, grads, strict=True):
                    if g is not None:
                        acc.add_(g)
            else:
                self._apply(grads)
                report.optimizer_steps += 1
            report.micro_batches += 1
            report.over_budget += int(reading.over_budget)
            report.peak_bytes = max(report.peak_bytes, reading.peak_bytes)
            report.sizes.append(b - a)
            report.peaks.append(reading.peak_bytes)
            report.loss += loss * (b - a) / n

        def oom(rows: int) -> None:
            report.ooms += 1

        run_passes(ordered, self.controller, self.signal, attempt, done, on_oom=oom)
        return report, total

    def _apply(self, grads: Sequence[torch.Tensor | None] | None) -> None:
        assert grads is not None
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        self.optimizer.step()
        for p in self.params:
            p.grad = None
