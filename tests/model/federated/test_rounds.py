"""The federation: only deltas reach the aggregator, idle devices change nothing,
state restores mid-stream, the strategies differ as they should."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from model.federated.compress import Compressed
from model.federated.rounds import FederatedConfig, Federation
from model.streams.devices import DevicesConfig, device_stream


@pytest.fixture(scope="module")
def stream() -> dict[str, np.ndarray]:
    return device_stream(DevicesConfig(devices=12, events=6000, features=10, seed=2))


def _rounds(fed: Federation, s: dict[str, np.ndarray], a: int, b: int, size: int = 500):
    preds = []
    for i in range(a, b, size):
        preds.append(fed.learn(s["key"][i : i + size], s["x"][i : i + size], s["y"][i : i + size]))
        fed.end_round()
    return np.concatenate(preds)


@pytest.mark.parametrize("compression", ["none", "topk", "int8"])
def test_the_aggregator_sees_deltas_never_events(stream, compression) -> None:
    fed = Federation(FederatedConfig(features=10, compression=compression))
    _rounds(fed, stream, 0, 3000)
    width = 11  # weights and bias
    rows = {tuple(np.round(r, 5)) for r in stream["x"][:3000]}
    for _, received in fed.aggregated_inputs:
        for item in received:
            if isinstance(item, Compressed):
                assert item.size == width
            else:
                assert item.shape == (width,)
                assert tuple(np.round(item[:10], 5)) not in rows


def test_a_device_without_data_in_a_round_does_not_change_the_global_model(stream) -> None:
    fed = Federation(FederatedConfig(features=10))
    _rounds(fed, stream, 0, 1000)
    keys = stream["key"][1000:1500]
    busy = keys != keys[0]
    base = fed.snapshot()
    fed.learn(keys[busy], stream["x"][1000:1500][busy], stream["y"][1000:1500][busy])
    without = fed.end_round()
    other = Federation(FederatedConfig(features=10))
    other.restore(base)
    other.devices.pop(keys[0])  # as if that device did not exist this round
    other.learn(keys[busy], stream["x"][1000:1500][busy], stream["y"][1000:1500][busy])
    other.end_round()
    np.testing.assert_allclose(fed.global_weights, other.global_weights)
    assert without.sat_out >= 1


def test_state_restores_mid_stream(stream) -> None:
    private = FederatedConfig(features=10, clip=1.0, noise_multiplier=0.5)
    compressed = FederatedConfig(features=10, compression="int8", personalize=0.3)
    for config in (private, compressed, FederatedConfig(features=10, mode="async")):
        one = Federation(config)
        _rounds(one, stream, 0, 3000)
        two = Federation(config)
        two.restore(pickle.loads(pickle.dumps(one.snapshot())))
        np.testing.assert_array_equal(_rounds(one, stream, 3000, 6000),
                                      _rounds(two, stream, 3000, 6000))  # fmt: skip
        np.testing.assert_array_equal(one.global_weights, two.global_weights)


def test_budgets_and_participation(stream) -> None:
    fed = Federation(FederatedConfig(features=10, steps_per_round=5, min_samples=5))
    fed.learn(stream["key"][:500], stream["x"][:500], stream["y"][:500])
    assert max(d.steps for d in fed.devices.values()) == 5
    report = fed.end_round()
    counts = {k: int((stream["key"][:500] == k).sum()) for k in set(stream["key"][:500])}
    assert report.participants == sum(1 for n in counts.values() if n >= 5)


def test_federation_helps_devices_with_little_data() -> None:
    s = device_stream(DevicesConfig(devices=30, events=30_000, features=20, seed=4))
    counts = {k: int((s["key"] == k).sum()) for k in set(s["key"].tolist())}
    little = sorted(counts, key=counts.get)[:8]
    accuracy = {}
    for mode in ("local", "fedavg"):
        fed = Federation(FederatedConfig(features=20, mode=mode))
        _rounds(fed, s, 0, 30_000, size=1000)
        accuracy[mode] = fed.accuracy(little)
    assert accuracy["fedavg"] > accuracy["local"] + 0.03


def test_noise_needs_a_clip_and_uncompressed_updates() -> None:
    with pytest.raises(ValueError, match="noise needs a clip"):
        FederatedConfig(features=3, noise_multiplier=1.0)
    with pytest.raises(ValueError, match="uncompressed"):
        FederatedConfig(features=3, clip=1.0, noise_multiplier=1.0, compression="topk")


def test_personalized_deltas_carry_only_the_rounds_learning(stream) -> None:
    fed = Federation(FederatedConfig(features=10, personalize=0.5))
    _rounds(fed, stream, 0, 1000)
    for d in fed.devices.values():
        np.testing.assert_array_equal(d.weights, d.start)  # a round starts with no delta


def test_secure_aggregation_gives_fedavg_and_shows_only_masked_updates(stream) -> None:
    plain = Federation(FederatedConfig(features=10))
    secure = Federation(FederatedConfig(features=10, secure=True))
    np.testing.assert_array_equal(_rounds(plain, stream, 0, 3000), _rounds(secure, stream, 0, 3000))
    np.testing.assert_allclose(secure.global_weights, plain.global_weights, atol=1e-5)
    for _, received in secure.aggregated_inputs:
        for item in received:
            assert item.dtype == np.uint64  # ring elements, uniform-looking: no delta shows
            assert np.abs(item.view(np.int64).astype(np.float64)).mean() > 1e15


def test_updates_fit_a_bytes_budget(stream) -> None:
    fed = Federation(FederatedConfig(features=10, max_update_bytes=16))
    _rounds(fed, stream, 0, 3000)
    for _, received in fed.aggregated_inputs:
        assert all(item.nbytes <= 16 for item in received)
    with pytest.raises(ValueError, match="max_update_bytes"):
        FederatedConfig(features=3, max_update_bytes=4)
    with pytest.raises(ValueError, match="secure aggregation"):
        FederatedConfig(features=3, secure=True, compression="topk")


def test_the_kernel_and_numpy_walk_alike(stream, monkeypatch) -> None:
    from model.federated import rounds
    from model.learn import native

    config = FederatedConfig(features=10, steps_per_round=40)
    with_kernel = Federation(config)
    kernel_preds = _rounds(with_kernel, stream, 0, 3000)
    monkeypatch.setattr(native, "compiled", lambda *a, **k: None)
    plain = Federation(config)
    np.testing.assert_array_equal(_rounds(plain, stream, 0, 3000), kernel_preds)
    np.testing.assert_allclose(plain.global_weights, with_kernel.global_weights, atol=1e-9)
    assert rounds.KERNEL.is_file()
