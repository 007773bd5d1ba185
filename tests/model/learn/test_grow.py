"""A learner's head grown to a new class keeps what it knew and learns the new one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.learn import IncrementalLearner, LearnerConfig
from model.learn.grow import grow_snapshot, grow_weights, output_classes
from model.mlp import MLPClassifier


def _rows(n: int, seed: int, classes: int):
    x = np.random.default_rng(seed).standard_normal((n, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    if classes == 3:
        y[x[:, 1] > 0.7] = 2
    return x, y


@pytest.mark.parametrize(
    "config",
    [
        LearnerConfig(kernel="fused", replay_size=50, ewc_lambda=1.0, ewc_every=2, seed=0),
        LearnerConfig(kernel="autograd", accumulate=2, standardize=True, seed=0),
        LearnerConfig(optimizer="sgd", momentum=0.9, lr=0.05, seed=0),
    ],
    ids=["fused-replay-ewc", "autograd-accumulating", "sgd-momentum"],
)
def test_a_grown_learner_keeps_its_classes_and_learns_the_new_one(config):
    old = IncrementalLearner(MLPClassifier(3, (16,), 2, seed=0), config)
    for i in range(30):
        old.learn(*_rows(32, i, 2))
    _ = old.learn(*_rows(32, 99, 2))  # accumulating: a gradient pending
    new = IncrementalLearner(MLPClassifier(3, (16,), 3, seed=0), config)
    new.restore(grow_snapshot(old.snapshot(), 3))
    probe, _ = _rows(500, 1000, 2)
    with torch.no_grad():
        known = old.module(torch.from_numpy(probe))
        grown = new.module(torch.from_numpy(probe))
    assert grown.shape == (500, 3) and torch.equal(grown[:, :2], known)
    assert new.samples == old.samples and new.steps == old.steps
    for i in range(200):
        new.learn(*_rows(32, 100 + i, 3))
    x, y = _rows(2000, 5000, 3)
    pred = new.predict(x)[0]
    assert (pred == y).mean() > 0.85 and (pred[y == 2] == 2).mean() > 0.6


def test_growth_checks_the_head():
    weights = MLPClassifier(3, (4,), 2, seed=0).state_dict()
    assert output_classes(weights) == 2
    assert grow_weights(weights, 2) is weights
    with pytest.raises(ValueError, match="cannot shrink"):
        grow_weights(weights, 1)
    with pytest.raises(ValueError, match="linear head"):
        grow_weights({"w": torch.zeros(3, 4), "b": torch.zeros(2)}, 3)
