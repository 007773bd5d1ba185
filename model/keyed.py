"""Several models selected by key (e.g. per tenant), loaded lazily, LRU-bounded.

>>> from model.artifact import ModelArtifact
>>> from model.mlp import MLPClassifier
>>> arts = {k: ModelArtifact.from_module(MLPClassifier(2, seed=i), i) for i, k in enumerate("abc")}
>>> cache = ModelCache(arts.__getitem__, max_resident=2, device="cpu")
>>> [cache.get(k).version for k in "abca"]
[0, 1, 2, 0]
>>> cache.resident(), cache.loads, cache.evictions
(['c', 'a'], 4, 2)
"""

from __future__ import annotations

from collections.abc import Callable

from model.artifact import ModelArtifact
from model.handler import TorchModelHandler
from model.process_cache import LRU


class ModelCache:
    """At most ``max_resident`` handlers in memory; the least recently used goes first."""

    def __init__(
        self,
        loader: Callable[[str], ModelArtifact],
        *,
        max_resident: int = 4,
        device: str = "auto",
    ) -> None:
        if max_resident <= 0:
            msg = f"max_resident must be > 0, got {max_resident!r}"
            raise ValueError(msg)
        self._loader = loader
        self._device = device
        self._handlers: LRU[str, TorchModelHandler] = LRU(max_resident)
        self.loads = 0
        self.evictions = 0

    def get(self, model_key: str) -> TorchModelHandler:
        handler = self._handlers.get(model_key)
        if handler is not None:
            return handler
        handler = TorchModelHandler(self._loader(model_key), self._device)
        self.loads += 1
        self.evictions += self._handlers.put(model_key, handler)
        return handler

    def resident(self) -> list[str]:
        """Keys in memory, least recently used first."""
        return list(self._handlers.keys())
