import numpy as np
import pytest
import torch

from model.artifact import ModelArtifact
from model.device import resolve_device
from model.handler import TorchModelHandler
from model.mlp import MLPClassifier, fit


@pytest.mark.parametrize("spec", ["GPU", "cuda:x", "tpu", "", "cuda0"])
def test_unknown_devices_are_rejected(spec):
    with pytest.raises(ValueError, match="device must be"):
        resolve_device(spec)


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_without_gpu_is_an_error_not_a_silent_cpu():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_artifact_roundtrip_and_version_tag():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    net = MLPClassifier(4, (16,), seed=0)
    acc = fit(net, x, y, epochs=30)
    assert acc > 0.9
    handler = TorchModelHandler(ModelArtifact.from_module(net, version=3), device="cpu")
    pred, conf = handler.predict(torch.from_numpy(x))
    assert handler.version == 3
    assert (pred == y).mean() == pytest.approx(acc)
    assert np.all((conf >= 0.5) & (conf <= 1.0))


def test_negative_version_rejected():
    with pytest.raises(ValueError, match="version must be >= 0"):
        ModelArtifact.from_module(MLPClassifier(2), version=-1)


def test_handlers_of_one_artifact_share_the_built_module():
    import pickle

    from model.process_cache import PROCESS_CACHE

    net = MLPClassifier(3, (4,), seed=0)
    artifact = ModelArtifact.from_module(net, version=3)
    # A runner unpickles a fresh copy of the artifact for every bundle.
    first = TorchModelHandler(pickle.loads(pickle.dumps(artifact)), "cpu")
    second = TorchModelHandler(pickle.loads(pickle.dumps(artifact)), "cpu")
    assert first.module is second.module
    newer = TorchModelHandler(ModelArtifact.from_module(net, version=4), "cpu")
    assert newer.module is not first.module
    with torch.no_grad():
        net.net[0].weight.add_(1.0)  # same version number, other weights: not shared
    changed = TorchModelHandler(ModelArtifact.from_module(net, version=3), "cpu")
    assert changed.module is not first.module
    # A lambda factory cannot be told apart from another: never shared.
    lam = ModelArtifact.from_factory(lambda: MLPClassifier(3, (4,), seed=0), version=1)
    assert TorchModelHandler(lam, "cpu").module is not TorchModelHandler(lam, "cpu").module
    # Bounded: the least recently used modules are dropped.
    limit = PROCESS_CACHE.limit("module")
    for v in range(10, 10 + limit + 2):
        TorchModelHandler(ModelArtifact.from_module(net, version=v), "cpu")
    assert PROCESS_CACHE.size("module") == limit
    assert TorchModelHandler(artifact, "cpu").module is not first.module
