"""The MLP classifier's seeding: weights a function of the seed, the global RNG untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn

from model.mlp import MLPClassifier, fit


def fingerprint(module: nn.Module) -> str:
    h = hashlib.sha256()
    for p in module.parameters():
        h.update(p.detach().numpy().tobytes())
    return h.hexdigest()[:16]


def test_a_seed_gives_the_same_weights_as_it_always_has():
    # Fingerprints of the weights these seeds gave when the seed reseeded torch
    # globally: a learner seeded so before still starts from the same model.
    assert fingerprint(MLPClassifier(4, (16, 8), 3, seed=0)) == "29266d044fd9ea1b"
    assert fingerprint(MLPClassifier(4, (16, 8), 3, seed=7)) == "1a2900a9da0fb17a"


def test_a_seed_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    MLPClassifier(4, (16, 8), 3, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(torch.rand(3), expected)


def test_without_a_seed_the_weights_come_from_the_global_random_state():
    torch.manual_seed(5)
    a = fingerprint(MLPClassifier(4, (8,)))
    b = fingerprint(MLPClassifier(4, (8,)))
    torch.manual_seed(5)
    assert a != b and fingerprint(MLPClassifier(4, (8,))) == a


def test_fit_shuffles_with_its_own_generator():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    before = torch.random.get_rng_state()
    a, b = MLPClassifier(4, (8,), seed=1), MLPClassifier(4, (8,), seed=1)
    assert fit(a, x, y, epochs=20, seed=2) == fit(b, x, y, epochs=20, seed=2) > 0.8
    assert fingerprint(a) == fingerprint(b)
    assert torch.equal(torch.random.get_rng_state(), before)
