"""A version's weights: written and read back exactly, in any format a store holds."""

from __future__ import annotations

import io

import pytest
import torch

from model.artifact import ModelArtifact, weights_bytes, weights_of
from model.mlp import MLPClassifier

CPU = torch.device("cpu")


def test_a_version_builds_with_its_exact_weights():
    module = MLPClassifier(5, hidden=(7,), num_classes=3, seed=4)
    built = ModelArtifact.from_module(module, version=9).build(CPU)
    x = torch.randn(11, 5)
    assert torch.equal(built(x), module.eval()(x))
    for name, tensor in module.state_dict().items():
        assert torch.equal(built.state_dict()[name], tensor)


def test_every_plain_dtype_round_trips_and_others_fall_back_to_torch_save():
    state = {
        "f32": torch.randn(3, 2),
        "f64": torch.randn(4, dtype=torch.float64),
        "i64": torch.arange(5),
        "flag": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "strided": torch.randn(4, 4).t(),  # not contiguous
    }
    back = weights_of(weights_bytes(state), CPU)
    assert list(back) == list(state)
    for name, tensor in state.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor)
    odd = {"bf16": torch.randn(3).to(torch.bfloat16)}
    data = weights_bytes(odd)
    assert torch.equal(weights_of(data, CPU)["bf16"], odd["bf16"])


def test_weights_written_by_torch_save_still_load():
    # versions in model stores written before this format
    module = MLPClassifier(3, seed=1)
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    old = ModelArtifact(
        "state_dict", 1, ModelArtifact.from_module(module, 1).factory, buf.getvalue()
    )
    x = torch.randn(2, 3)
    assert torch.equal(old.build(CPU)(x), module.eval()(x))


def test_the_weights_format_is_data_not_code():
    data = weights_bytes({"w": torch.ones(2)})
    assert b"pickle" not in data and b"torch._utils" not in data
    with pytest.raises(ValueError):
        weights_of(data[:-3], CPU)  # truncated: refused, not misread
