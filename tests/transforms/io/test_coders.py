"""A model version survives its coder and the model store, whatever its factory."""

from __future__ import annotations

import functools

import numpy as np
import torch
from apache_beam.internal import pickler

from model.artifact import ModelArtifact
from model.mlp import MLPClassifier
from transforms.io import ModelArtifactCoder, ModelStore


def _same_predictions(a: ModelArtifact, b: ModelArtifact) -> bool:
    x = torch.as_tensor(np.random.default_rng(0).normal(size=(5, 3)), dtype=torch.float32)
    cpu = torch.device("cpu")
    return bool(torch.equal(a.build(cpu)(x), b.build(cpu)(x)))


def test_versions_round_trip_with_every_field():
    coder = ModelArtifactCoder()
    factory = functools.partial(MLPClassifier, 3, (4,), 2, seed=1)
    for art in (
        ModelArtifact.from_module(factory(), 7, factory=factory, trained_until_us=-5_000_000),
        ModelArtifact.from_module(MLPClassifier(3, seed=0), 0),
        ModelArtifact.from_factory(factory, 2),
        ModelArtifact.torchscript(MLPClassifier(3, seed=0), 4),
    ):
        back = coder.decode(coder.encode(art))
        assert (back.kind, back.version, back.data, back.trained_until_us) == (
            art.kind,
            art.version,
            art.data,
            art.trained_until_us,
        )
        assert _same_predictions(art, back)


def test_a_closure_factory_travels_by_value():
    hidden = (5,)

    def factory() -> MLPClassifier:  # a closure: plain pickle could not carry it
        return MLPClassifier(3, hidden, 2, seed=3)

    coder = ModelArtifactCoder()
    art = ModelArtifact.from_module(factory(), 1, factory=factory)
    assert _same_predictions(art, coder.decode(coder.encode(art)))


def test_model_store_reads_files_of_the_earlier_layout(tmp_path):
    store = ModelStore(str(tmp_path))
    art = ModelArtifact.from_module(MLPClassifier(3, seed=0), 3)
    with open(store.path_of(3), "wb") as f:  # how versions were stored before
        f.write(pickler.dumps(art))
    assert _same_predictions(store.load(3), art)
    store.save(ModelArtifact.from_module(MLPClassifier(3, seed=0), 4))
    assert store.versions() == [3, 4] and store.load(4).version == 4
