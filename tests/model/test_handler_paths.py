"""The handler's device paths, out-of-memory recovery, artifacts and model cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.artifact import ModelArtifact
from model.batching import AdaptiveBatchSize
from model.device import HostStaging
from model.handler import TorchModelHandler
from model.keyed import ModelCache
from model.mlp import MLPClassifier

CPU = torch.device("cpu")


def features(n: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def artifact(version: int = 0, seed: int = 0) -> ModelArtifact:
    return ModelArtifact.from_module(MLPClassifier(4, (8,), seed=seed), version)


def test_staging_path_reuses_one_buffer_and_matches_direct_scoring():
    staging = HostStaging(CPU, pin=False, always=True)
    staged = TorchModelHandler(artifact(), "cpu", staging=staging)
    direct = TorchModelHandler(artifact(), "cpu")
    for n in (100, 40, 100, 7):
        a, b = staged.predict(features(n, seed=n)), direct.predict(features(n, seed=n))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_allclose(a[1], b[1])
    assert staging.allocations == 1  # grown once to the largest pass, then reused
    bigger = features(600)
    staged.batching = AdaptiveBatchSize(initial=600, max_size=600)
    staged.predict(bigger)
    assert staging.allocations == 2


class OomAbove(nn.Module):
    """Raises CUDA out-of-memory for passes larger than ``limit`` rows."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.calls = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_oom_splits_retries_lowers_the_ceiling_and_loses_no_row():
    net = MLPClassifier(4, (8,), seed=1)
    reference = TorchModelHandler(ModelArtifact.from_module(net, 0), "cpu")
    oom = OomAbove(net, limit=40)
    handler = TorchModelHandler(
        ModelArtifact.from_factory(lambda: oom, 0),
        "cpu",
        batching=AdaptiveBatchSize(initial=256, max_size=1024),
    )
    x = features(300)
    pred, score = handler.predict(x)
    ref_pred, ref_score = reference.predict(x)
    np.testing.assert_array_equal(pred, ref_pred)
    np.testing.assert_allclose(score, ref_score, rtol=1e-6)
    assert handler.stats.oom_splits > 0
    assert handler.batching.ceiling <= 40
    # Later batches start at the lowered ceiling: no more failures.
    oom.calls.clear()
    handler.predict(features(200))
    assert max(oom.calls) <= 40 and handler.stats.rows == 500


def test_oom_on_a_single_row_is_raised_not_swallowed():
    oom = OomAbove(MLPClassifier(4, (8,), seed=1), limit=0)
    handler = TorchModelHandler(ModelArtifact.from_factory(lambda: oom, 0), "cpu")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        handler.predict(features(4))


def test_adaptive_size_follows_the_latency_target():
    c = AdaptiveBatchSize(target_latency_s=0.01, initial=64, max_size=256, step=64)
    for _ in range(5):
        c.record(c.size, 0.001)
    assert c.size == 256  # grew to the maximum
    c.record(256, 0.02)
    assert c.size == 128  # halved on a slow pass
    c.record(10, 0.001)
    assert c.size == 128  # a partial pass says nothing about a larger one
    state = c.snapshot()
    d = AdaptiveBatchSize(target_latency_s=0.01, initial=64, max_size=256, step=64)
    d.restore(state)
    assert d.snapshot() == state


def test_torchscript_factory_and_compiled_models_agree():
    net = MLPClassifier(4, (8,), seed=3).eval()
    x = features(50)
    expected = TorchModelHandler(ModelArtifact.from_module(net, 0), "cpu").predict(x)
    for art, kwargs in [
        (ModelArtifact.torchscript(net, 1), {}),
        (ModelArtifact.from_factory(lambda: net, 2), {}),
        (ModelArtifact.from_module(net, 3), {"compile": "eager"}),
    ]:
        got = TorchModelHandler(art, "cpu", **kwargs).predict(x)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)


def test_swap_only_moves_forward():
    handler = TorchModelHandler(artifact(version=2), "cpu")
    assert not handler.swap(artifact(version=1))
    assert handler.version == 2
    assert handler.swap(artifact(version=5, seed=9))
    assert handler.version == 5 and handler.stats.load_seconds > 0


def test_model_cache_is_lru_bounded():
    loaded = []

    def loader(key: str) -> ModelArtifact:
        loaded.append(key)
        return artifact(version=ord(key))

    cache = ModelCache(loader, max_resident=2, device="cpu")
    for key in "abab":
        cache.get(key)
    assert loaded == ["a", "b"]
    cache.get("c")  # evicts a (least recently used)
    assert cache.resident() == ["b", "c"]
    cache.get("a")  # reloads a, evicts b
    assert loaded == ["a", "b", "c", "a"] and cache.evictions == 2
    assert cache.get("a").version == ord("a")


def test_artifact_validation():
    with pytest.raises(ValueError, match="needs factory=True"):
        ModelArtifact("state_dict", 0, data=b"x")
    with pytest.raises(TypeError, match="pass a factory"):
        ModelArtifact.from_module(nn.Linear(2, 2), 0)
