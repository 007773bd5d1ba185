"""Pairwise secure-aggregation masks (Bonawitz et al., 2017): the aggregator sees
only the sum of the devices' updates.

Each pair of devices ``i < j`` shares a seed (here derived from a round secret and
the pair; in a deployment, from a Diffie-Hellman key agreement between them); device
``i`` adds the pair's pseudo-random mask and ``j`` subtracts it. Updates are encoded
in fixed point (``FRACTION_BITS`` bits after the point) as integers modulo 2^64, so
the masks, uniform over that ring, hide each update completely and cancel *exactly*
in the sum: :func:`unmask_sum` gives the same integers as summing the plain encoded
updates. (Dropped devices need the protocol's secret sharing to unmask; here every
device of a round's set sends.)

>>> devices = ["a", "b", "c"]
>>> updates = {d: np.array([0.5, -1.25]) for d in devices}
>>> masked = [mask(updates[d], d, devices, b"round-1") for d in devices]
>>> unmask_sum(masked).tolist()
[1.5, -3.75]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

FRACTION_BITS = 24  # fixed point: 2^-24 ~ 6e-8 per coordinate


def encode(x: np.ndarray) -> np.ndarray:
    """Fixed-point integers modulo 2^64 (as uint64; negatives wrap around)."""
    scaled = np.rint(np.asarray(x, np.float64) * (1 << FRACTION_BITS)).astype(np.int64)
    return scaled.view(np.uint64)


def decode(ring: np.ndarray) -> np.ndarray:
    """The inverse of :func:`encode` (a sum of encodings decodes to the sum)."""
    return np.asarray(ring, np.uint64).view(np.int64).astype(np.float64) / (1 << FRACTION_BITS)


def _pair_mask(a: str, b: str, secret: bytes, size: int) -> np.ndarray:
    seed = hashlib.blake2b(secret + b"\0" + a.encode() + b"\0" + b.encode(), digest_size=16)
    rng = np.random.default_rng(int.from_bytes(seed.digest(), "little"))
    return rng.integers(0, 2**64, size, dtype=np.uint64, endpoint=False)


def mask(update: np.ndarray, device: str, devices: Sequence[str], secret: bytes) -> np.ndarray:
    """``device``'s update, encoded and masked with every other device of the round."""
    out = encode(update)
    for other in devices:
        if other == device:
            continue
        first, second = sorted((device, other))
        m = _pair_mask(first, second, secret, out.size)
        out = out + m if device == first else out - m  # uint64: modulo 2^64
    return out


def unmask_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """The sum of the round's updates: the masks cancel modulo 2^64."""
    total = np.zeros_like(masked[0])
    for m in masked:
        total = total + m
    return decode(total)
