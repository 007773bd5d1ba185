"""The fused MLP kernel: same training as autograd, faster, and honest about scope."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.fused import mlp_linears
from model.learner import IncrementalLearner, LearnerConfig
from model.mlp import MLPClassifier


def learner(kernel: str, module: nn.Module | None = None, **kwargs) -> IncrementalLearner:
    module = module or MLPClassifier(5, (16, 8), 3, seed=0)
    return IncrementalLearner(module, LearnerConfig(kernel=kernel, seed=0, **kwargs))  # type: ignore[arg-type]


def batches(n: int, seed: int = 0, rows: int = 48):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5, 3))
    for _ in range(n):
        x = (rng.standard_normal((rows, 5)) * 3 + 1).astype(np.float32)
        yield x, (x @ w).argmax(axis=1).astype(np.int64)


CONFIGS = [
    {"optimizer": "adam", "lr": 0.01},
    {"optimizer": "sgd", "lr": 0.05},
    {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9},
    {"optimizer": "adam", "lr": 0.01, "accumulate": 3, "replay_size": 100, "replay_batch": 16},
    {"optimizer": "sgd", "lr": 0.05, "ewc_lambda": 50.0, "ewc_every": 4, "standardize": True},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_fused_trains_exactly_like_autograd(cfg):
    slow, fast = learner("autograd", **cfg), learner("fused", **cfg)
    assert slow.kernel is None and fast.kernel is not None
    for x, y in batches(40):
        assert fast.learn(x, y) == pytest.approx(slow.learn(x, y), rel=1e-4, abs=1e-6)
    for p, q in zip(slow.module.parameters(), fast.module.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    x, _ = next(batches(1, seed=9))
    np.testing.assert_array_equal(fast.predict(x)[0], slow.predict(x)[0])
    np.testing.assert_allclose(fast.predict(x)[1], slow.predict(x)[1], rtol=1e-5)
    # The optimizer state is torch's own: a snapshot restores into an autograd learner.
    other = learner("autograd", **cfg)
    other.restore(fast.snapshot())
    for x, y in batches(5, seed=3):
        assert other.learn(x, y) == pytest.approx(slow.learn(x, y), rel=1e-3, abs=1e-5)


def test_predict_learn_is_predict_then_learn():
    together, apart = learner("fused", standardize=True), learner("fused", standardize=True)
    for x, y in batches(20):
        pred, conf, loss = together.predict_learn(x, y)
        pred2, conf2 = apart.predict(x)
        np.testing.assert_array_equal(pred, pred2)
        np.testing.assert_allclose(conf, conf2, rtol=1e-6)
        assert loss == apart.learn(x, y)
    assert together.steps == apart.steps == 20


def test_module_keeps_the_trained_weights():
    fast = learner("fused")
    before = {k: v.clone() for k, v in fast.module.state_dict().items()}
    for x, y in batches(5):
        fast.learn(x, y)
    after = fast.module.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    x, _ = next(batches(1, seed=4))
    with torch.inference_mode():
        direct = fast.module(torch.from_numpy(x)).argmax(1).numpy()
    np.testing.assert_array_equal(direct, fast.predict(x)[0])


@pytest.mark.parametrize(
    ("module", "fits"),
    [
        (MLPClassifier(3, (4,), 2), True),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), True),
        (nn.Sequential(nn.Linear(3, 2)), True),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), False),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)), False),
        (nn.Sequential(nn.Linear(3, 2, bias=False)), False),
        (nn.Sequential(nn.Linear(3, 2)).double(), False),
    ],
)
def test_which_modules_the_kernel_takes(module, fits):
    assert (mlp_linears(module) is not None) == fits
    auto = IncrementalLearner(module, LearnerConfig(kernel="auto"))
    assert (auto.kernel is not None) == fits
    if not fits:
        with pytest.raises(ValueError, match="kernel='fused' needs"):
            IncrementalLearner(module, LearnerConfig(kernel="fused"))


def test_optimizers_the_kernel_cannot_reproduce_fall_back_to_autograd():
    from model.fused import optimizer_supported

    params = list(MLPClassifier(3, (4,), 2).parameters())
    assert optimizer_supported(torch.optim.Adam(params, lr=0.1))
    assert optimizer_supported(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert not optimizer_supported(torch.optim.Adam(params, lr=0.1, amsgrad=True))
    assert not optimizer_supported(torch.optim.AdamW(params, lr=0.1))
    assert not optimizer_supported(torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True))
    frozen = MLPClassifier(3, (4,), 2)
    frozen.net[0].weight.requires_grad_(False)
    assert mlp_linears(frozen) is None
