"""A small multi-layer perceptron classifier, and an offline warm-start fit.

>>> import torch
>>> net = MLPClassifier(in_features=4, hidden=(8,), num_classes=2, seed=0)
>>> net(torch.zeros(3, 4)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from model.seeding import seeded


class MLPClassifier(nn.Module):
    """``Linear -> ReLU`` blocks then a linear head producing class logits.

    With ``seed`` the initial weights are a function of it alone, and torch's global
    random state is left as it was; without, they are drawn from it."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (32,),
        num_classes: int = 2,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if in_features <= 0 or num_classes < 2 or any(h <= 0 for h in hidden):
            msg = (
                "need in_features > 0, num_classes >= 2 and hidden sizes > 0, got "
                f"in_features={in_features!r}, num_classes={num_classes!r}, hidden={hidden!r}"
            )
            raise ValueError(msg)
        self.in_features = in_features
        self.hidden = tuple(hidden)
        self.num_classes = num_classes
        # A seed initializes from torch's CPU generator seeded so, then puts the
        # generator back as it was: the caller's random stream is untouched.
        with seeded(seed):
            layers: list[nn.Module] = []
            width = in_features
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.ReLU()]
                width = h
            layers.append(nn.Linear(width, num_classes))
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def fit(
    module: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 128,
    lr: float = 1e-2,
    seed: int = 0,
) -> float:
    """Train ``module`` in place with Adam + cross-entropy; returns training accuracy.

    The batches are shuffled by a generator of its own, seeded by ``seed``: torch's
    global random state is not used."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad()
            loss_fn(module(xt[idx]), yt[idx]).backward()
            opt.step()
    module.eval()
    with torch.inference_mode():
        return float((module(xt).argmax(1) == yt).float().mean())
