"""The PyTorch model handler: load on a chosen device, score batches, swap versions.

- device ``auto | cpu | cuda | cuda:N`` as a real ``torch.device`` (bad strings fail);
- ``torch.inference_mode``; on CUDA a reusable pinned host buffer and non-blocking
  copies (:class:`model.device.HostStaging`); optional ``torch.compile``;
- rows are scored in forward passes sized by an AIMD controller
  (:class:`model.batching.AdaptiveBatchSize`) against a latency target;
- a CUDA out-of-memory error splits the pass in halves and retries, lowers the
  controller's ceiling, and never drops a row (a single row that does not fit is an
  error, not a silent loss);
- with ``memory`` (:class:`model.memory_control.MemoryControl`), a memory controller
  sizes the passes too (never above the latency controller's size), each pass is
  measured against the budget, and the same split serves its out-of-memory errors
  (on the CPU too, under a cap);
- :meth:`TorchModelHandler.swap` loads a newer version; outputs say which version
  scored them.

>>> import numpy as np
>>> from model.artifact import ModelArtifact
>>> from model.mlp import MLPClassifier
>>> h = TorchModelHandler(ModelArtifact.from_module(MLPClassifier(3, seed=0), 7), "cpu")
>>> pred, score = h.predict(torch.zeros(5, 3))
>>> pred.shape, h.version
((5,), 7)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from model.artifact import ModelArtifact
from model.backpressure import Controller, Unbounded, run_passes
from model.batching import AdaptiveBatchSize
from model.device import HostStaging, resolve_device
from model.memory import MemoryReading, MemorySignal, NoSignal
from model.memory_control import MemoryControl
from model.process_cache import PROCESS_CACHE


def classify_logits(logits: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class (int64) and its softmax probability (float32) per row, on the host."""
    conf, pred = torch.softmax(logits, dim=1).max(dim=1)
    return pred.cpu().numpy().astype(np.int64), conf.float().cpu().numpy()


@dataclass
class HandlerStats:
    """Running totals a caller can turn into metrics."""

    rows: int = 0
    passes: int = 0
    oom_splits: int = 0
    load_seconds: float = 0.0
    pass_sizes: list[int] = field(default_factory=list)
    pass_seconds: list[float] = field(default_factory=list)

    def drain(self) -> tuple[list[int], list[float]]:
        """Per-pass sizes and latencies since the last call."""
        sizes, seconds = self.pass_sizes, self.pass_seconds
        self.pass_sizes, self.pass_seconds = [], []
        return sizes, seconds


def shared_module(
    artifact: ModelArtifact, device: torch.device, compile: bool | str = False
) -> nn.Module:
    """The artifact's module built on ``device`` (and compiled), shared by every
    handler of this process that loads the same artifact (:data:`PROCESS_CACHE`,
    kind ``module``): building costs milliseconds (a Transformer encoder deep-copies
    its layers), and a runner may set up a fresh DoFn, hence a fresh handler, for
    every bundle. Modules are only ever run in inference mode, never changed, so
    sharing them between threads is safe."""
    fingerprint = artifact.fingerprint()
    if fingerprint is None:
        return _build(artifact, device, compile)
    key = (fingerprint, str(device), compile)
    return PROCESS_CACHE.get_or_build("module", key, lambda: _build(artifact, device, compile))


def _build(artifact: ModelArtifact, device: torch.device, compile: bool | str) -> nn.Module:
    module = artifact.build(device)
    if compile:
        backend = compile if isinstance(compile, str) else "inductor"
        module = torch.compile(module, backend=backend)  # type: ignore[assignment]
    return module


class TorchModelHandler:
    """Scores feature matrices with one model version at a time."""

    def __init__(
        self,
        artifact: ModelArtifact,
        device: str = "auto",
        *,
        batching: AdaptiveBatchSize | None = None,
        compile: bool | str = False,
        staging: HostStaging | None = None,
        memory: MemoryControl | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.memory = memory
        # passes: the memory controller's (under the latency size), or the latency
        # size's alone; an out-of-memory error splits either way (run_passes)
        self._sizing: tuple[Controller, MemorySignal] = (
            (memory.controller, memory.signal) if memory is not None else (Unbounded(), NoSignal())
        )
        self.batching = batching or AdaptiveBatchSize()
        self._compile = compile
        self.staging = staging or HostStaging(self.device)
        self.stats = HandlerStats()
        self.version = -1
        self.module: nn.Module
        self.swap(artifact)

    def swap(self, artifact: ModelArtifact) -> bool:
        """Load ``artifact`` if it is newer than the current version; True if it was."""
        if artifact.version <= self.version:
            return False
        start = time.perf_counter()
        module = shared_module(artifact, self.device, self._compile)
        self.module, self.version = module, artifact.version
        self.stats.load_seconds += time.perf_counter() - start
        return True

    def predict(self, features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and its probability for every row, in row order."""
        x = torch.as_tensor(features)
        parts: list[tuple[np.ndarray, np.ndarray]] = []

        def done(a: int, b: int, part: Any, reading: MemoryReading) -> None:
            parts.append(part)
            if self.memory is not None:
                self.memory.figures.add(1, 0, int(reading.over_budget), reading.peak_bytes)

        controller, signal = self._sizing
        run_passes(
            np.ones(len(x)),
            controller,
            signal,
            lambda a, b: self._forward(x[a:b]),
            done,
            limit=lambda: self.batching.size,
            on_oom=self._out_of_memory,
        )
        self.stats.rows += len(x)
        if not parts:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _out_of_memory(self, rows: int) -> None:
        self.stats.oom_splits += 1
        self.batching.on_oom(rows)
        if self.memory is not None:
            self.memory.figures.add(0, 1, 0, 0)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _forward(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        with torch.inference_mode():
            pred_np, conf_np = classify_logits(self.module(self.staging.to_device(x)))
        seconds = time.perf_counter() - start
        self.batching.record(len(x), seconds)
        self.stats.passes += 1
        self.stats.pass_sizes.append(len(x))
        self.stats.pass_seconds.append(seconds)
        return pred_np, conf_np
