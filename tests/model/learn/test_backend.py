"""The learner's backends: the choice, and snapshots that restore into either one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from model.learn.backend import AutogradBackend, Backend, FusedBackend, make_backend
from model.learn.state_bytes import dumps_state, loads_state
from model.mlp import MLPClassifier


def build(kernel: str, seed: int = 0) -> Backend:
    module = MLPClassifier(4, (8,), 3, seed=seed)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    return make_backend(module, optimizer, kernel)  # type: ignore[arg-type]


def batches(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        x = rng.standard_normal((16, 4)).astype(np.float32)
        yield x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)


def train(backend: Backend, data, *, first: int = 1) -> list[float]:
    """Learn from ``data`` (batch ``first`` first), a step every two batches."""
    losses = []
    for i, (x, y) in enumerate(data, start=first):
        losses.append(backend.forward_backward(x, x, y, 0.5, None)[1])
        if i % 2 == 0:
            backend.step()
    return losses


def weights(backend: Backend) -> bytes:
    return b"".join(p.detach().numpy().tobytes() for p in backend.module.parameters())


@pytest.mark.parametrize("kernel", ["autograd", "fused"])
def test_snapshot_mid_accumulation_restores_exactly(kernel):
    data = list(batches(11))
    straight = build(kernel)
    straight_losses = train(straight, data)
    first = build(kernel)
    train(first, data[:5])  # two steps and half of the third's gradient
    restored = build(kernel, seed=1)
    restored.restore(loads_state(dumps_state(first.snapshot(accumulating=True))))
    assert train(restored, data[5:], first=6) == straight_losses[5:]
    assert weights(restored) == weights(straight)


@pytest.mark.parametrize(("source", "target"), [("fused", "autograd"), ("autograd", "fused")])
def test_a_snapshot_restores_into_the_other_backend(source, target):
    a, b = build(source), build(target, seed=1)
    train(a, batches(6))
    b.restore(copy.deepcopy(a.snapshot(accumulating=False)))  # its tensors are live
    assert weights(a) == weights(b)
    x, _ = next(batches(1, seed=5))
    np.testing.assert_array_equal(a.predict(x, None)[0], b.predict(x, None)[0])
    later = list(batches(4, seed=6))
    np.testing.assert_allclose(train(a, later), train(b, later), rtol=1e-5)


def test_the_layout_conversions_are_inverse():
    fused = build("fused")
    assert isinstance(fused, FusedBackend)
    tensors = fused.tensors(fused.params())
    assert [t.shape for t in tensors] == [p.shape for p in fused.module.parameters()]
    (flat,) = fused.arrays(tensors)
    assert flat.tobytes() == fused.kernel.flat.tobytes() and flat is not fused.kernel.flat
    autograd = build("autograd")
    params = autograd.params()
    assert autograd.arrays(autograd.tensors(params)) is params  # one layout


def test_which_backend():
    assert isinstance(build("auto"), FusedBackend)
    assert isinstance(build("autograd"), AutogradBackend)
    tanh = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2))
    sgd = torch.optim.SGD(tanh.parameters(), lr=0.1)
    assert isinstance(make_backend(tanh, sgd, "auto"), AutogradBackend)
    with pytest.raises(ValueError, match="kernel='fused' needs a float32 CPU MLP"):
        make_backend(tanh, sgd, "fused")
