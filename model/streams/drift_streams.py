"""Classic concept-drift streams, written here (no external generator), seeded.

Each function returns ``(x, y)``: float32 features ``(n, d)`` and int64 labels, in
stream order, with the drift built in:

- :func:`sea`: SEA concepts, 3 features in [0, 10], label ``x0 + x1 <= theta``; theta
  jumps between 8, 9, 7 and 9.5 every quarter (abrupt drift), 10 % label noise;
- :func:`hyperplane`: a rotating hyperplane in ``[0, 1]^d`` whose weights move a
  little after every sample (gradual drift), 5 % label noise;
- :func:`agrawal`: Agrawal's loan-applicant records (9 attributes of very different
  ranges) labelled by classification functions 1, 2 and 3 in turn (abrupt drift).

:func:`as_chunks` turns them into micro-batches with event times.

>>> x, y = sea(1000, seed=0)
>>> x.shape, sorted(set(y.tolist()))
((1000, 3), [0, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from model import batch as mb


def _flip(y: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return np.where(rng.random(len(y)) < rate, 1 - y, y)


def sea(n: int, seed: int = 0, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 11])
    x = rng.uniform(0, 10, (n, 3)).astype(np.float32)
    thetas = np.array([8.0, 9.0, 7.0, 9.5])
    theta = thetas[np.minimum(np.arange(n) * 4 // n, 3)]
    y = (x[:, 0] + x[:, 1] <= theta).astype(np.int64)
    return x, _flip(y, noise, rng)


def hyperplane(
    n: int, seed: int = 0, d: int = 10, magnitude: float = 0.001, noise: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 12])
    x = rng.random((n, d)).astype(np.float32)
    w0 = rng.random(d)
    # Each weight drifts by +-magnitude per sample, direction reversed with p = 10 %.
    direction = np.where(rng.random((n, d)) < 0.1, -1.0, 1.0)
    sign = np.cumprod(direction, axis=0)
    w = w0 + magnitude * np.cumsum(sign, axis=0)
    y = ((x * w).sum(axis=1) >= w.sum(axis=1) / 2).astype(np.int64)
    return x, _flip(y, noise, rng)


def _agrawal_function(k: int, a: dict[str, np.ndarray]) -> np.ndarray:
    age, salary, elevel = a["age"], a["salary"], a["elevel"]
    young, middle, old = age < 40, (age >= 40) & (age < 60), age >= 60
    if k == 1:
        return young | old
    if k == 2:
        return (
            (young & (salary >= 50e3) & (salary <= 100e3))
            | (middle & (salary >= 75e3) & (salary <= 125e3))
            | (old & (salary >= 25e3) & (salary <= 75e3))
        )
    return (
        (young & (elevel <= 1)) | (middle & (elevel >= 1) & (elevel <= 3)) | (old & (elevel >= 2))
    )


def agrawal(n: int, seed: int = 0, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 13])
    salary = rng.uniform(20e3, 150e3, n)
    commission = np.where(salary >= 75e3, 0.0, rng.uniform(10e3, 75e3, n))
    age = rng.integers(20, 81, n).astype(np.float64)
    elevel = rng.integers(0, 5, n).astype(np.float64)
    car = rng.integers(1, 21, n).astype(np.float64)
    zipcode = rng.integers(0, 9, n).astype(np.float64)
    hvalue = (9 - zipcode) * 100e3 * rng.uniform(0.5, 1.5, n)
    hyears = rng.integers(1, 31, n).astype(np.float64)
    loan = rng.uniform(0, 500e3, n)
    attrs = {"age": age, "salary": salary, "elevel": elevel}
    block = np.minimum(np.arange(n) * 3 // n, 2)
    y = np.zeros(n, dtype=np.int64)
    for k in (1, 2, 3):
        sel = block == k - 1
        y[sel] = _agrawal_function(k, {a: v[sel] for a, v in attrs.items()})
    x = np.stack([salary, commission, age, elevel, car, zipcode, hvalue, hyears, loan], axis=1)
    return x.astype(np.float32), _flip(y, noise, rng)


STREAMS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "sea": sea,
    "hyperplane": hyperplane,
    "agrawal": agrawal,
}


def as_chunks(
    x: np.ndarray, y: np.ndarray, *, chunk: int = 256, rate: float = 1000.0, key: str = "stream"
) -> Iterator[pa.RecordBatch]:
    """Micro-batches of ``chunk`` rows, event times ``i / rate`` seconds (ms aligned)."""
    t_us = (np.arange(len(x)) * 1000 // rate).astype(np.int64) * 1000
    for start in range(0, len(x), chunk):
        sl = slice(start, start + chunk)
        n = len(x[sl])
        yield mb.make_batch(
            mb.constant_keys(key, n),
            t_us[sl],
            x[sl],
            labels=y[sl],
            event_ids=np.arange(start, start + n),
        )
