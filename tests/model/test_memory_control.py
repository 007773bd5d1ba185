"""Memory control in the handler and the learner: same results, bounded passes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.artifact import ModelArtifact
from model.handler import TorchModelHandler
from model.learn.learner import IncrementalLearner, LearnerConfig
from model.memory import MemoryReading, TensorMemory
from model.memory_control import MemoryConfig, MemoryControl, parse_bytes
from model.mlp import MLPClassifier


def _rows(n: int = 600, d: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def test_parse_bytes_and_config_validation() -> None:
    assert parse_bytes("1K") == 1024 and parse_bytes("1.5M") == 3 << 19
    with pytest.raises(ValueError, match="memory size"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="needs a memory budget"):
        MemoryConfig("credit")
    with pytest.raises(ValueError, match="one of"):
        MemoryConfig("greedy", budget_bytes=100)
    with pytest.raises(ValueError, match="budget_bytes"):
        MemoryConfig("credit", budget_bytes=-5)
    assert not MemoryConfig().enabled
    assert MemoryConfig(budget_bytes=10).enabled


def test_run_covers_every_row_once_and_splits_on_out_of_memory() -> None:
    control = MemoryControl(MemoryConfig(), MemoryConfig().controller(), TensorMemory())
    calls: list[tuple[int, int]] = []

    def work(a: int, b: int) -> list[int]:
        calls.append((a, b))
        if b - a > 100:
            raise torch.OutOfMemoryError("too many rows")
        return list(range(a, b))

    parts = control.run(1000, work)
    assert [i for p in parts for i in p] == list(range(1000))
    assert control.figures.ooms >= 3 and all(len(p) <= 100 for p in parts)
    with pytest.raises(torch.OutOfMemoryError):
        control.run(3, lambda a, b: (_ for _ in ()).throw(torch.OutOfMemoryError("none fit")))


def test_handler_with_a_budget_scores_like_without_it() -> None:
    x, _ = _rows(2000, 8)
    artifact = ModelArtifact.from_module(MLPClassifier(8, (64,), seed=0), 1)
    plain = TorchModelHandler(artifact, "cpu").predict(x)
    probe = TensorMemory()
    with probe.step():
        TorchModelHandler(artifact, "cpu").predict(x[:64])
    config = MemoryConfig("credit", budget_bytes=probe.reading().peak_bytes * 2)
    handler = TorchModelHandler(artifact, "cpu", memory=config.build("cpu"))
    got = handler.predict(x)
    np.testing.assert_array_equal(got[0], plain[0])
    np.testing.assert_allclose(got[1], plain[1], rtol=1e-6)
    figures = handler.memory.figures  # type: ignore[union-attr]
    assert figures.steps > 2 and figures.over_budget == 0


def test_learner_under_a_budget_learns_exactly_what_it_learns_without() -> None:
    x, y = _rows()
    base = LearnerConfig(kernel="autograd", optimizer="sgd", lr=0.1, momentum=0.9, seed=0)
    budget = 40_000  # a few dozen rows of this MLP's step
    runs = {}
    for name, memory in (("free", MemoryConfig()), ("budget", MemoryConfig("credit", budget))):
        config = LearnerConfig(**{**base.__dict__, "memory": memory})
        learner = IncrementalLearner(MLPClassifier(8, (64, 64), seed=0), config)
        for i in range(0, len(x), 200):
            learner.learn(x[i : i + 200], y[i : i + 200])
        runs[name] = learner
    a, b = (torch.cat([p.flatten() for p in runs[k].module.parameters()]) for k in runs)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    figures = runs["budget"].memory.figures  # type: ignore[union-attr]
    assert figures.steps > 3  # split into micro-batches
    assert figures.over_budget == 0 and figures.peak_bytes <= budget
    assert runs["free"].memory is None


def test_the_fused_kernel_ignores_a_budget() -> None:
    config = LearnerConfig(kernel="fused", memory=MemoryConfig("credit", 10_000))
    learner = IncrementalLearner(MLPClassifier(8, (16,), seed=0), config)
    assert learner.memory is None


def test_figures_drain() -> None:
    control = MemoryConfig("aimd", 1000).build("cpu")
    control.figures.add(3, 1, 2, 500)
    drained = control.figures.drain()
    assert (drained.steps, drained.ooms, drained.over_budget, drained.peak_bytes) == (3, 1, 2, 500)
    assert control.figures.steps == 0
    control.controller.observe(8, 8.0, MemoryReading(0, 2000, 1000))
    assert control.controller.next_size([1.0] * 100) == 4
