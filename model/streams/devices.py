"""A non-IID stream of many devices: each its own feature shift, concept and volume.

A shared concept ``w`` (a linear boundary through the origin over ``features``
features) drifts: it turns towards a new direction over the stream and, at
``shift_at``, jumps. Each device sees features shifted by its own offset (so its
classes are balanced its own way), labels by ``w`` plus its own perturbation
(``personal`` of the way to a device direction), with ``noise`` label flips, and
produces events at its own rate: volumes are log-normal, so some devices have little
data. Events are in time order, ``interval_s`` apart. Pure numpy.

>>> s = device_stream(DevicesConfig(devices=5, events=1000, seed=1))
>>> len(s["key"]), len(set(s["key"].tolist())) == 5, s["x"].shape
(1000, True, (1000, 50))
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from model import batch as mb


@dataclass(frozen=True)
class DevicesConfig:
    devices: int = 60
    events: int = 120_000
    features: int = 50
    personal: float = 0.25
    shift: float = 0.8  # spread of the devices' feature offsets
    noise: float = 0.05
    volume_sigma: float = 1.2  # log-normal spread of the devices' event rates
    shift_at: float = 0.6
    interval_s: float = 1.0
    start: int = 1_700_000_000
    seed: int = 0


def device_stream(cfg: DevicesConfig) -> dict[str, np.ndarray]:
    """Columns ``timestamp`` (epoch s), ``key`` (device), ``x`` (n x features), ``y``."""
    rng = np.random.default_rng(cfg.seed)
    d, n = cfg.features, cfg.events
    rates = rng.lognormal(0.0, cfg.volume_sigma, cfg.devices)
    device = rng.choice(cfg.devices, n, p=rates / rates.sum())
    offsets = rng.normal(0, cfg.shift, (cfg.devices, d))
    own = rng.normal(0, 1, (cfg.devices, d))
    w0, w1, w2 = (rng.normal(0, 1, d) for _ in range(3))
    t = np.arange(n) / max(1, n - 1)
    w = np.outer(1 - t, w0) + np.outer(t, w1)
    w[t >= cfg.shift_at] = w2
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    own = own / np.linalg.norm(own, axis=1, keepdims=True)
    concept = (1 - cfg.personal) * w + cfg.personal * own[device]
    x = rng.normal(0, 1, (n, d)) + offsets[device]
    y = ((x * concept).sum(1) > 0).astype(np.int64)
    flip = rng.random(n) < cfg.noise
    y[flip] = 1 - y[flip]
    return {
        "timestamp": cfg.start + np.arange(n) * cfg.interval_s,
        "key": np.array([f"device-{k:03d}" for k in device]),
        "x": x.astype(np.float32),
        "y": y,
    }


def device_batches(
    cfg: DevicesConfig, chunk_rows: int = 4_096
) -> Iterator[tuple[pa.RecordBatch, int, list[Any]]]:
    """The stream as micro-batches (``key``, ``event_time``, ``features``, ``label``,
    ``event_id``), each with the source watermark after it (its newest event time)
    and no dead letters: the items a replay takes."""
    s = device_stream(cfg)
    times_us = (s["timestamp"] * mb.US_PER_SECOND).astype(np.int64)
    for a in range(0, len(times_us), chunk_rows):
        b = min(a + chunk_rows, len(times_us))
        batch = mb.make_batch(s["key"][a:b].tolist(), times_us[a:b], s["x"][a:b],
                              labels=s["y"][a:b], event_ids=np.arange(a, b))  # fmt: skip
        yield batch, int(times_us[b - 1]), []
