"""Online elastic weight consolidation (EWC): resist forgetting what an anchor knew.

:class:`OnlineEWC` keeps a running diagonal Fisher estimate ``F`` (squared loss
gradients, exponentially decayed) and an anchor ``theta*`` (the parameters, refreshed
every ``every`` steps). After each optimizer step on the loss it takes the proximal
step of the penalty ``strength/2 * sum F (theta - theta*)^2``:
``theta <- theta* + (theta - theta*) / (1 + lr * strength * F)``, which is stable for
any stiffness (an explicit gradient step on the penalty diverges once
``lr * strength * F > 2``). The step size is the learning rate: exact for SGD; with
Adam, whose steps are normalized, the pull toward the anchor is relatively stronger
for the same ``strength``.

It works on whatever arrays a backend trains (:mod:`model.learn.backend`): torch
tensors per parameter, or the fused kernel's one flat numpy buffer. The arithmetic is
written once with in-place operators both libraries share, so either way every
element sees the same float32 operations in the same order.

>>> import numpy as np
>>> ewc = OnlineEWC(strength=1.0, decay=0.5, every=1)
>>> theta = [np.ones(2, np.float32)]
>>> ewc.after_step(theta, ewc.squared([np.full(2, 2.0, np.float32)]), lr=0.5, step=1)
>>> theta[0] += 3.0  # a step on the loss moves 3 away from the anchor at 1 ...
>>> ewc.after_step(theta, ewc.squared([np.zeros(2, np.float32)]), lr=0.5, step=2)
>>> theta[0].tolist(), ewc.fisher[0].tolist()  # ... the pull (1 + 0.5 * 4) leaves 1
([2.0, 2.0], [2.0, 2.0])
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import numpy as np
import torch

A = TypeVar("A", np.ndarray, torch.Tensor)


class OnlineEWC(Generic[A]):
    """Running Fisher estimate and anchor; the proximal pull after each step.

    ``strength`` is the penalty's lambda (0 turns it off: see :attr:`active`),
    ``decay`` the weight of the old Fisher estimate at each step, ``every`` how many
    steps apart the anchor is refreshed."""

    def __init__(self, strength: float, decay: float, every: int) -> None:
        self.strength = strength
        self.decay = decay
        self.every = every
        self.fisher: list[A] | None = None
        self.anchor: list[A] | None = None

    @property
    def active(self) -> bool:
        return bool(self.strength)

    @staticmethod
    def squared(grads: list[A]) -> list[A]:
        """The squared loss gradient, taken before the optimizer step clears it."""
        return [g * g for g in grads]

    def after_step(self, params: list[A], squared: list[A], lr: float, step: int) -> None:
        """After optimizer step number ``step`` (counted from 1) on the loss: pull
        ``params`` (in place) toward the anchor, fold ``squared`` (never the
        penalty's gradient) into the Fisher estimate, and anchor at the result every
        ``every`` steps."""
        if self.fisher is not None and self.anchor is not None:
            stiffness = lr * self.strength
            for p, f, a in zip(params, self.fisher, self.anchor, strict=True):
                p -= a
                p /= 1.0 + stiffness * f
                p += a
        if self.fisher is None:
            self.fisher = squared
        else:
            d = self.decay
            for f, s in zip(self.fisher, squared, strict=True):
                f *= d
                f += (1 - d) * s
        if step % self.every == 0:
            self.anchor = [_copy(p) for p in params]

    def snapshot(self) -> dict[str, Any]:
        """The Fisher estimate and anchor, live (the caller copies or serializes)."""
        return {"fisher": self.fisher, "anchor": self.anchor}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot`; its arrays become this object's own."""
        self.fisher, self.anchor = state["fisher"], state["anchor"]


def _copy(a: A) -> A:
    if isinstance(a, np.ndarray):
        return a.copy()
    return a.detach().clone()
