"""The Transformer classifier's seeding: weights a function of the seed, the global RNG
untouched."""

from __future__ import annotations

import torch

from model.transformer import TinyTransformerClassifier
from tests.model.test_mlp import fingerprint


def tiny(seed: int | None) -> TinyTransformerClassifier:
    return TinyTransformerClassifier(6, d_model=16, nhead=2, num_layers=2, num_classes=3, seed=seed)


def test_a_seed_gives_the_same_weights_as_it_always_has():
    # Fingerprints of the weights these seeds gave when the seed reseeded torch globally.
    assert fingerprint(tiny(0)) == "dac2ffdbd0700f59"
    assert fingerprint(tiny(7)) == "13d57be266f07158"


def test_a_seed_leaves_the_global_random_state_alone():
    before = torch.random.get_rng_state()
    tiny(0)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.manual_seed(5)
    unseeded = fingerprint(tiny(None))
    torch.manual_seed(5)
    assert fingerprint(tiny(None)) == unseeded != fingerprint(tiny(0))
