"""Scoring micro-batches with a PyTorch classifier, tagged with the model version.

A :class:`ModelArtifact` is what travels to the workers: a module factory, the
weights as bytes and a version number. :class:`BatchScorer` turns it into a module on
an explicitly chosen device and scores feature matrices under
``torch.inference_mode``.

>>> import numpy as np
>>> from model.mlp import MLPClassifier
>>> art = ModelArtifact.from_module(MLPClassifier(3, seed=0), version=7)
>>> scorer = BatchScorer(art, device="cpu")
>>> pred, score = scorer.score(np.zeros((2, 3), np.float32))
>>> pred.dtype, score.shape, scorer.version
(dtype('int64'), (2,), 7)
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` to a ``torch.device``; unknown strings are an error.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA where there is none
    (or for a GPU index that does not exist) raises instead of silently using the CPU.
    """
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec.strip().lower()):
        msg = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}"
        raise ValueError(msg)
    name = spec.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            msg = f"device {spec!r} requested but CUDA is not available"
            raise ValueError(msg)
        if device.index is not None and device.index >= torch.cuda.device_count():
            msg = f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            raise ValueError(msg)
    return device


@dataclass(frozen=True)
class ModelArtifact:
    """A picklable model: ``factory()`` builds the module, ``state`` holds its weights."""

    factory: Callable[[], nn.Module]
    state: bytes
    version: int

    def __post_init__(self) -> None:
        if self.version < 0:
            msg = f"model version must be >= 0, got {self.version!r}"
            raise ValueError(msg)

    @classmethod
    def from_module(
        cls, module: nn.Module, version: int, factory: Callable[[], nn.Module] | None = None
    ) -> ModelArtifact:
        """Capture ``module``'s weights; the factory defaults to rebuilding its class
        from the attributes ``MLPClassifier`` keeps (pass one for other modules)."""
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        return cls(factory or _Rebuild.of(module), buf.getvalue(), version)

    def load(self, device: torch.device) -> nn.Module:
        module = self.factory()
        state = torch.load(io.BytesIO(self.state), map_location=device, weights_only=True)
        module.load_state_dict(state)
        return module.to(device).eval()


@dataclass(frozen=True)
class _Rebuild:
    """A picklable factory for :class:`model.mlp.MLPClassifier`."""

    in_features: int
    hidden: tuple[int, ...]
    num_classes: int

    @classmethod
    def of(cls, module: nn.Module) -> _Rebuild:
        from model.mlp import MLPClassifier

        if not isinstance(module, MLPClassifier):
            msg = f"pass a factory for {type(module).__name__} (only MLPClassifier is inferred)"
            raise TypeError(msg)
        return cls(module.in_features, module.hidden, module.num_classes)

    def __call__(self) -> nn.Module:
        from model.mlp import MLPClassifier

        return MLPClassifier(self.in_features, self.hidden, self.num_classes)


class BatchScorer:
    """Scores ``(rows, features)`` float32 arrays: predicted class and its probability."""

    def __init__(self, artifact: ModelArtifact, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.version = artifact.version
        self.module = artifact.load(self.device)

    def score(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(features)
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        with torch.inference_mode():
            probs = torch.softmax(self.module(x), dim=1)
            conf, pred = probs.max(dim=1)
        return pred.cpu().numpy().astype(np.int64), conf.cpu().numpy().astype(np.float32)
