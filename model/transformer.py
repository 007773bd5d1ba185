"""A small Transformer encoder classifier over feature vectors.

Each of the ``in_features`` values becomes a token (a learned projection of the value
plus a position embedding); a few encoder layers mix them; the mean token goes
through a linear head.

>>> import torch
>>> net = TinyTransformerClassifier(in_features=8, seed=0)
>>> net(torch.zeros(3, 8)).shape
torch.Size([3, 2])
"""

from __future__ import annotations

import torch
from torch import nn

from model.seeding import seeded


class TinyTransformerClassifier(nn.Module):
    """Feature values as tokens, a small encoder, the mean token to class logits.

    With ``seed`` the initial weights are a function of it alone, and torch's global
    random state is left as it was; without, they are drawn from it."""

    def __init__(
        self,
        in_features: int,
        d_model: int = 32,
        nhead: int = 4,
        num_layers: int = 2,
        num_classes: int = 2,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if in_features <= 0 or d_model % nhead or num_classes < 2 or num_layers <= 0:
            msg = (
                "need in_features > 0, d_model divisible by nhead, num_layers > 0 and "
                f"num_classes >= 2, got {in_features!r}, {d_model!r}/{nhead!r}, "
                f"{num_layers!r}, {num_classes!r}"
            )
            raise ValueError(msg)
        self.in_features = in_features
        # A seed initializes from torch's CPU generator seeded so, then puts the
        # generator back as it was: the caller's random stream is untouched.
        with seeded(seed):
            self.value = nn.Linear(1, d_model)
            self.position = nn.Parameter(torch.randn(in_features, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(
                d_model, nhead, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.value(x.unsqueeze(-1)) + self.position
        return self.head(self.encoder(tokens).mean(dim=1))
