"""Online EWC: one implementation, the same bits over torch tensors and numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from model.learn.ewc import OnlineEWC
from model.learn.state_bytes import dumps_state, loads_state

SHAPES = [(6, 3), (6,), (2, 6), (2,)]


def gradients(seed: int, steps: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def run(ewc: OnlineEWC[Any], params: list[Any], grads, lr: float, first_step: int) -> None:
    """A stand-in for the optimizer step (params -= lr * grad), then EWC's."""
    for step, grad in enumerate(grads, start=first_step):
        squared = ewc.squared(grad)
        for p, g in zip(params, grad, strict=True):
            p -= lr * g
        ewc.after_step(params, squared, lr, step)


def test_flat_numpy_and_per_parameter_torch_give_the_same_bits() -> None:
    # the fused backend's one flat buffer and autograd's tensor per parameter
    start = [np.random.default_rng(1).standard_normal(s).astype(np.float32) for s in SHAPES]
    flat_ewc: OnlineEWC[np.ndarray] = OnlineEWC(strength=40.0, decay=0.9, every=3)
    torch_ewc: OnlineEWC[torch.Tensor] = OnlineEWC(strength=40.0, decay=0.9, every=3)
    flat = [np.concatenate([a.ravel() for a in start])]
    tensors = [torch.from_numpy(a.copy()) for a in start]
    steps = list(gradients(2, 25))
    run(flat_ewc, flat, ([np.concatenate([g.ravel() for g in grad])] for grad in steps), 0.05, 1)
    run(torch_ewc, tensors, ([torch.from_numpy(g) for g in grad] for grad in steps), 0.05, 1)
    joined = np.concatenate([t.numpy().ravel() for t in tensors])
    assert flat[0].tobytes() == joined.tobytes()
    assert flat_ewc.fisher is not None and torch_ewc.fisher is not None
    fisher = np.concatenate([t.numpy().ravel() for t in torch_ewc.fisher])
    assert flat_ewc.fisher[0].tobytes() == fisher.tobytes()


def test_snapshot_restore_continues_exactly() -> None:
    params = [np.ones(s, np.float32) for s in SHAPES]
    original: OnlineEWC[np.ndarray] = OnlineEWC(strength=10.0, decay=0.8, every=4)
    run(original, params, gradients(3, 6), 0.1, 1)
    restored: OnlineEWC[np.ndarray] = OnlineEWC(strength=10.0, decay=0.8, every=4)
    restored.restore(loads_state(dumps_state(original.snapshot())))
    copies = [p.copy() for p in params]
    run(original, params, gradients(4, 9), 0.1, 7)
    run(restored, copies, gradients(4, 9), 0.1, 7)
    for p, q in zip(params, copies, strict=True):
        assert p.tobytes() == q.tobytes()


def test_no_strength_is_inactive() -> None:
    assert not OnlineEWC(strength=0.0, decay=0.9, every=1).active
    fresh: OnlineEWC[np.ndarray] = OnlineEWC(strength=1.0, decay=0.9, every=1)
    assert fresh.active and fresh.snapshot() == {"fisher": None, "anchor": None}
