"""Client-level differential privacy: clipping, Gaussian noise, and the accountant.

Each device's delta is clipped to an L2 norm of ``clip`` (:func:`clip_delta`), so one
device changes the sum by at most ``clip``; the aggregator adds Gaussian noise of
standard deviation ``noise_multiplier * clip`` to the sum (:func:`noisy_sum`). The
privacy lost is accounted with Rényi differential privacy (Mironov, 2017) for the
sampled Gaussian mechanism (Mironov, Talwar and Zhang, 2019): each round a device
takes part with probability ``q`` (1 when participation is not random);
after the rounds, :meth:`RDPAccountant.epsilon`
gives the smallest epsilon for the given delta over the orders tried (the classic
conversion ``eps = rdp(alpha) + log(1/delta) / (alpha - 1)``, as TensorFlow Privacy's
accountant reports it). A subsampling ``q`` < 1 assumes devices take part
independently at random with that probability; the federation's participation
depends on the data (a device sits a round out for lack of it), so it accounts
every round with ``q = 1``.

>>> accountant = RDPAccountant()
>>> accountant.step(q=1.0, noise_multiplier=1.0)  # one round of the Gaussian mechanism
>>> round(accountant.epsilon(1e-5), 2)
5.3
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# integer orders (the sum over k below is exact for them)
ORDERS: tuple[int, ...] = tuple(range(2, 64)) + (80, 96, 128, 256, 512)


def clip_delta(delta: np.ndarray, clip: float) -> np.ndarray:
    """``delta`` scaled down to an L2 norm of at most ``clip``."""
    if clip <= 0:
        msg = f"clip must be > 0, got {clip!r}"
        raise ValueError(msg)
    norm = float(np.linalg.norm(delta))
    return delta if norm <= clip else delta * (clip / norm)


def noisy_sum(
    deltas: list[np.ndarray], clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """The sum of the (clipped) deltas plus N(0, (noise_multiplier * clip)^2) noise."""
    total = np.sum([clip_delta(np.asarray(d, np.float64), clip) for d in deltas], axis=0)
    return add_noise(total, clip, noise_multiplier, rng)


def add_noise(
    total: np.ndarray, clip: float, noise_multiplier: float, rng: np.random.Generator
) -> np.ndarray:
    """A sum of clipped deltas plus N(0, (noise_multiplier * clip)^2) noise."""
    if noise_multiplier < 0:
        msg = f"noise_multiplier must be >= 0, got {noise_multiplier!r}"
        raise ValueError(msg)
    return total + rng.normal(0.0, noise_multiplier * clip, np.shape(total))


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))


def rdp_sampled_gaussian(q: float, noise_multiplier: float, order: int) -> float:
    """Rényi DP of one round of the sampled Gaussian mechanism at an integer order."""
    if not 0 <= q <= 1 or noise_multiplier <= 0 or order < 2:
        msg = f"need 0 <= q <= 1, noise > 0, order >= 2; got {q!r}, {noise_multiplier!r}, {order!r}"
        raise ValueError(msg)
    if q == 0:
        return 0.0
    if q == 1:
        return order / (2 * noise_multiplier**2)
    log_a = -math.inf
    for k in range(order + 1):
        term = (
            math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
            + k * math.log(q) + (order - k) * math.log1p(-q)
            + (k * k - k) / (2 * noise_multiplier**2)
        )  # fmt: skip
        log_a = _log_add(log_a, term)
    return log_a / (order - 1)


class RDPAccountant:
    """The privacy spent over rounds: :meth:`step` each round, :meth:`epsilon` any time."""

    def __init__(self, orders: tuple[int, ...] = ORDERS) -> None:
        self.orders = orders
        self.rdp = np.zeros(len(orders))
        self.rounds = 0

    def step(self, q: float, noise_multiplier: float, rounds: int = 1) -> None:
        self.rdp += rounds * np.array(
            [rdp_sampled_gaussian(q, noise_multiplier, a) for a in self.orders]
        )
        self.rounds += rounds

    def epsilon(self, delta: float) -> float:
        """The smallest epsilon over the orders for this ``delta`` (0 before any
        round: nothing was released)."""
        if not 0 < delta < 1:
            msg = f"delta must be in (0, 1), got {delta!r}"
            raise ValueError(msg)
        if self.rounds == 0:
            return 0.0
        orders = np.asarray(self.orders, np.float64)
        return float(np.min(self.rdp + math.log(1 / delta) / (orders - 1)))

    def snapshot(self) -> dict[str, Any]:
        return {"rdp": self.rdp.tolist(), "rounds": self.rounds}

    def restore(self, state: dict[str, Any]) -> None:
        self.rdp = np.asarray(state["rdp"], np.float64)
        self.rounds = int(state["rounds"])
