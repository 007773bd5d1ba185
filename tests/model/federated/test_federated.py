"""Federated pieces: aggregation by hand, staleness, clipping, masks, accountant,
compression with error feedback, state round trips."""

from __future__ import annotations

import numpy as np
import pytest

from model.federated.aggregate import BufferedAsync, fedavg, personalize, staleness_weight
from model.federated.compress import Dense, Quantize8, TopK, decode, make_compressor
from model.federated.privacy import RDPAccountant, clip_delta, noisy_sum
from model.federated.secure import encode, mask, unmask_sum


def test_fedavg_equals_a_hand_computation() -> None:
    deltas = [np.array([1.0, 2.0]), np.array([3.0, -1.0]), np.array([0.0, 4.0])]
    got = fedavg(deltas, [10, 30, 60])
    hand = np.array([(10 * 1 + 30 * 3 + 60 * 0) / 100, (10 * 2 + 30 * -1 + 60 * 4) / 100])
    np.testing.assert_allclose(got, hand)


def test_a_device_without_data_does_not_move_the_global_model() -> None:
    deltas = [np.array([1.0, 2.0]), np.array([3.0, -1.0])]
    with_idle = fedavg([*deltas, np.array([100.0, 100.0])], [5, 7, 0])
    np.testing.assert_allclose(with_idle, fedavg(deltas, [5, 7]))
    np.testing.assert_array_equal(fedavg([np.ones(2)], [0]), np.zeros(2))


def test_staleness_weights_and_the_buffered_variant() -> None:
    assert staleness_weight(0) == 1.0 and staleness_weight(3, 0.5) == pytest.approx(0.5)
    assert staleness_weight(8, 1.0) == pytest.approx(1 / 9)
    server = BufferedAsync(buffer=2, exponent=0.5)
    assert server.add(np.array([2.0]), 10, based_on=0) is None
    step = server.add(np.array([4.0]), 10, based_on=0)
    assert step is not None and step.tolist() == [3.0] and server.version == 1
    assert server.add(np.array([1.0]), 10, based_on=1) is None  # fresh
    step = server.add(np.array([5.0]), 30, based_on=0)  # one version stale: weight 30/sqrt(2)
    w = 30 / np.sqrt(2)
    assert step is not None and step[0] == pytest.approx((10 * 1 + w * 5) / (10 + w))
    with pytest.raises(ValueError, match="cannot come before"):
        server.add(np.array([1.0]), 1, based_on=9)
    clone = BufferedAsync(buffer=2)
    server.add(np.array([7.0]), 3, based_on=2)
    clone.restore(server.snapshot())
    assert clone.add(np.array([1.0]), 3, 2).tolist() == server.add(np.array([1.0]), 3, 2).tolist()


def test_personalization_mixes_local_and_global() -> None:
    assert personalize(np.array([0.0, 4.0]), np.array([2.0, 0.0]), 0.25).tolist() == [0.5, 3.0]
    with pytest.raises(ValueError, match="mix"):
        personalize(np.zeros(1), np.zeros(1), 1.5)


def test_clipping_bounds_every_delta() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        delta = rng.normal(0, rng.uniform(0.01, 10), 20)
        clipped = clip_delta(delta, 1.0)
        assert np.linalg.norm(clipped) <= 1.0 + 1e-9
        if np.linalg.norm(delta) <= 1.0:
            np.testing.assert_array_equal(clipped, delta)


def test_the_noise_has_the_standard_deviation_asked() -> None:
    out = noisy_sum([np.zeros(20_000)], clip=2.0, noise_multiplier=1.5,
                    rng=np.random.default_rng(1))  # fmt: skip
    assert float(np.std(out)) == pytest.approx(3.0, rel=0.03)


@pytest.mark.parametrize(
    ("sigma", "epochs", "published"),
    # TensorFlow Privacy's MNIST tutorial table: q = 256/60000, delta = 1e-5
    [(1.12, 60, 2.92), (0.6, 30, 9.74), (1.2, 10, 1.20)],
)
def test_the_accountant_against_published_values(sigma, epochs, published) -> None:
    accountant = RDPAccountant()
    accountant.step(q=256 / 60_000, noise_multiplier=sigma, rounds=epochs * 60_000 // 256)
    assert accountant.epsilon(1e-5) == pytest.approx(published, rel=0.01)


def test_the_accountant_adds_up_and_round_trips() -> None:
    one, two = RDPAccountant(), RDPAccountant()
    one.step(0.1, 1.0, rounds=10)
    for _ in range(10):
        two.step(0.1, 1.0)
    assert one.epsilon(1e-5) == pytest.approx(two.epsilon(1e-5))
    more = RDPAccountant()
    more.restore(one.snapshot())
    more.step(0.1, 1.0)
    assert more.epsilon(1e-5) > one.epsilon(1e-5)


def test_masks_cancel_exactly_and_hide_each_update() -> None:
    rng = np.random.default_rng(3)
    devices = [f"d{i}" for i in range(7)]
    updates = {d: rng.normal(0, 1, 100) for d in devices}
    masked = [mask(updates[d], d, devices, b"round-9") for d in devices]
    plain = np.zeros(100, np.uint64)
    for d in devices:
        plain = plain + encode(updates[d])
    np.testing.assert_array_equal(np.sum(masked, axis=0, dtype=np.uint64), plain)  # exact
    np.testing.assert_allclose(unmask_sum(masked), sum(updates.values()), atol=1e-6)
    # one masked update says nothing: far from the encoding of the update itself
    assert np.mean(masked[0] == encode(updates["d0"])) < 0.01


def test_error_feedback_loses_nothing_for_good() -> None:
    rng = np.random.default_rng(4)
    deltas = [rng.normal(0, 1, 1000) for _ in range(20)]
    for compressor in (TopK(0.01), Quantize8(seed=1)):
        received = sum(decode(compressor.encode(d)) for d in deltas)
        assert compressor.residual is not None
        np.testing.assert_allclose(received + compressor.residual, sum(deltas), atol=1e-3)


def test_compressed_bytes_are_measured() -> None:
    delta = np.random.default_rng(5).normal(0, 1, 10_000)
    dense = Dense().encode(delta).nbytes
    assert dense == 4 + 40_000
    assert TopK(0.01).encode(delta).nbytes == 4 + 100 * (2 + 2)  # uint16 index, float16
    assert Quantize8().encode(delta).nbytes == 4 + 4 + 10_000
    assert dense / TopK(0.01).encode(delta).nbytes > 10


def test_compressor_state_round_trips() -> None:
    rng = np.random.default_rng(6)
    a, b = Quantize8(seed=2), Quantize8(seed=99)
    a.encode(rng.normal(0, 1, 50))
    b.restore(a.snapshot())
    x = rng.normal(0, 1, 50)
    np.testing.assert_array_equal(decode(a.encode(x)), decode(b.encode(x)))
    with pytest.raises(ValueError, match="compression must be"):
        make_compressor("zip")
