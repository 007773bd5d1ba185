"""A learner's model as published: fixed standardization folded in front of it.

A learner that standardizes its features by running moments publishes
:class:`Standardized` (the moments frozen at export), so a scorer needs no scaler of
its own; :class:`StandardizedFactory` rebuilds its structure (picklable, for
artifacts).

>>> import torch
>>> net = Standardized(torch.nn.Identity(), 2)
>>> net.mean.fill_(1.0).tolist(), net(torch.tensor([[3.0, 1.0]])).tolist()
([1.0, 1.0], [[2.0, 0.0]])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class Standardized(nn.Module):
    """``inner`` applied to features scaled by fixed means and standard deviations."""

    def __init__(self, inner: nn.Module, num_features: int) -> None:
        super().__init__()
        self.inner = inner
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std)


@dataclass(frozen=True)
class StandardizedFactory:
    """Builds an empty :class:`Standardized` around ``factory()`` (picklable)."""

    factory: Callable[[], nn.Module]
    num_features: int

    def __call__(self) -> nn.Module:
        return Standardized(self.factory(), self.num_features)
