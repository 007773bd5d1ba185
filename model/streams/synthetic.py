"""A deterministic, seeded event stream with concept drift, anomalies and disorder.

Pure numpy (no Beam): the generator yields *arrival chunks*, each a micro-batch of
events in the order they reach the pipeline plus the source watermark after it.
The Beam sources in :mod:`transforms.io.sources` replay these chunks.

The concept is a linear boundary ``label = [x . w_c > 0]``; each drift point moves
to a new random ``w``. Abrupt drifts switch at once; gradual drifts mix old and new
concepts with a probability that ramps linearly over ``width_s`` seconds.

Disorder: most events arrive in event-time order; a share arrives up to
``max_out_of_order_s`` late (still ahead of the watermark, which trails the newest
event time by ``watermark_lag_s``); a share arrives ``late_delay_s`` behind,
i.e. after the watermark has passed them.

>>> cfg = SyntheticConfig(num_events=1000, seed=1)
>>> chunks = list(generate(cfg))
>>> sum(c.batch.num_rows for c in chunks)
1000
>>> [c.watermark_us for c in chunks] == sorted(c.watermark_us for c in chunks)
True
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pyarrow as pa

from model import batch as mb

ANOMALY = "is_anomaly"
DEFAULT_START_US = 1_767_225_600 * mb.US_PER_SECOND  # 2026-01-01T00:00:00Z


@dataclass(frozen=True)
class Drift:
    """A concept change at ``at_s`` seconds of event time after the stream start."""

    at_s: float
    kind: Literal["abrupt", "gradual"] = "abrupt"
    width_s: float = 0.0

    def __post_init__(self) -> None:
        if self.at_s < 0:
            msg = f"drift at_s must be >= 0, got {self.at_s!r}"
            raise ValueError(msg)
        if self.kind not in ("abrupt", "gradual"):
            msg = f"drift kind must be 'abrupt' or 'gradual', got {self.kind!r}"
            raise ValueError(msg)
        if self.kind == "gradual" and self.width_s <= 0:
            msg = f"a gradual drift needs width_s > 0, got {self.width_s!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class SyntheticConfig:
    """What the synthetic stream looks like. Every field is validated."""

    num_events: int = 20_000
    num_keys: int = 8
    num_features: int = 8
    events_per_second: float = 100.0
    start_us: int = DEFAULT_START_US
    drifts: tuple[Drift, ...] = field(
        default_factory=lambda: (Drift(at_s=60.0), Drift(at_s=130.0, kind="gradual", width_s=20.0))
    )
    anomaly_fraction: float = 0.01
    out_of_order_fraction: float = 0.1
    max_out_of_order_s: float = 2.0
    late_fraction: float = 0.01
    late_delay_s: float = 30.0
    watermark_lag_s: float = 2.0
    label_noise: float = 0.0
    chunk_events: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        positive = {
            "num_events": self.num_events,
            "num_keys": self.num_keys,
            "num_features": self.num_features,
            "events_per_second": self.events_per_second,
            "chunk_events": self.chunk_events,
        }
        for name, value in positive.items():
            if value <= 0:
                msg = f"{name} must be > 0, got {value!r}"
                raise ValueError(msg)
        fractions = {
            "anomaly_fraction": self.anomaly_fraction,
            "out_of_order_fraction": self.out_of_order_fraction,
            "late_fraction": self.late_fraction,
            "label_noise": self.label_noise,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                msg = f"{name} must be in [0, 1], got {value!r}"
                raise ValueError(msg)
        if self.out_of_order_fraction + self.late_fraction > 1.0:
            msg = (
                "out_of_order_fraction + late_fraction must be <= 1, got "
                f"{self.out_of_order_fraction + self.late_fraction!r}"
            )
            raise ValueError(msg)
        for name in ("max_out_of_order_s", "late_delay_s", "watermark_lag_s"):
            if getattr(self, name) < 0:
                msg = f"{name} must be >= 0, got {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.late_fraction > 0 and self.late_delay_s <= self.watermark_lag_s:
            msg = (
                f"late_delay_s ({self.late_delay_s!r}) must exceed watermark_lag_s "
                f"({self.watermark_lag_s!r}) for late events to be late"
            )
            raise ValueError(msg)
        at = [d.at_s for d in self.drifts]
        if at != sorted(at):
            msg = f"drifts must be in time order, got at_s={at!r}"
            raise ValueError(msg)


@dataclass(frozen=True)
class StreamChunk:
    """Events in arrival order, and the source watermark once they have arrived."""

    batch: pa.RecordBatch
    watermark_us: int


def concept_index(cfg: SyntheticConfig, t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which concept (0 = initial, i = after drift i) generates each event."""
    concept = np.zeros(len(t_s), dtype=np.int64)
    draws = rng.random(len(t_s))
    for i, drift in enumerate(cfg.drifts, start=1):
        if drift.kind == "abrupt":
            switched = t_s >= drift.at_s
        else:
            p_new = np.clip((t_s - drift.at_s) / drift.width_s, 0.0, 1.0)
            switched = draws < p_new
        concept = np.where(switched, i, concept)
    return concept


def concept_weights(cfg: SyntheticConfig) -> np.ndarray:
    """One weight vector per concept (initial, then one per drift)."""
    rng = np.random.default_rng([cfg.seed, 1])
    return rng.standard_normal((len(cfg.drifts) + 1, cfg.num_features)).astype(np.float32)


def warmup_sample(cfg: SyntheticConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh labelled examples of the initial concept, disjoint from the stream.

    For training a starting model without ever seeing an event the pipeline will score.
    """
    rng = np.random.default_rng([cfg.seed, 2])
    x = rng.standard_normal((n, cfg.num_features)).astype(np.float32)
    y = (x @ concept_weights(cfg)[0] > 0).astype(np.int64)
    return x, y


def events(cfg: SyntheticConfig) -> tuple[pa.RecordBatch, np.ndarray]:
    """All events in event-time order, and the arrival time (us) of each."""
    rng = np.random.default_rng([cfg.seed, 0])
    n, d = cfg.num_events, cfg.num_features
    t_s = (np.arange(n) + rng.random(n)) / cfg.events_per_second
    # Millisecond event times: Beam's runner APIs carry timestamps in milliseconds.
    event_us = cfg.start_us + np.round(t_s * 1000).astype(np.int64) * 1000
    x = rng.standard_normal((n, d), dtype=np.float32)
    weights = concept_weights(cfg)
    concept = concept_index(cfg, t_s, rng)
    labels = ((x @ weights.T)[np.arange(n), concept] > 0).astype(np.int64)
    flip = rng.random(n) < cfg.label_noise
    labels = np.where(flip, 1 - labels, labels)
    anomaly = rng.random(n) < cfg.anomaly_fraction
    x[anomaly] *= 8.0
    key_ids = rng.integers(0, cfg.num_keys, n)
    key_names = pa.array([f"key-{k}" for k in range(cfg.num_keys)], type=pa.string())
    # Dictionary-encoded, as a source that knows its keys hands them over: grouping by
    # key downstream reads these codes (see model.batch.key_codes).
    keys = pa.DictionaryArray.from_arrays(pa.array(key_ids, type=pa.int32()), key_names)

    kind = rng.random(n)
    delay_s = np.zeros(n)
    ooo = kind < cfg.out_of_order_fraction
    late = (kind >= cfg.out_of_order_fraction) & (
        kind < cfg.out_of_order_fraction + cfg.late_fraction
    )
    delay_s[ooo] = rng.random(int(ooo.sum())) * cfg.max_out_of_order_s
    delay_s[late] = cfg.late_delay_s * (1.0 + rng.random(int(late.sum())))
    arrival_us = event_us + np.round(delay_s * 1000).astype(np.int64) * 1000

    batch = mb.make_batch(
        keys,
        event_us,
        x,
        labels=labels,
        event_ids=np.arange(n),
        extra={ANOMALY: pa.array(anomaly)},
    )
    return batch, arrival_us


def generate(cfg: SyntheticConfig) -> Iterator[StreamChunk]:
    """Arrival chunks of ``cfg.chunk_events`` events with a non-decreasing watermark.

    The watermark after a chunk trails the newest event time that has arrived so far
    by ``watermark_lag_s``; out-of-order events within that lag are on time, the late
    share arrives behind the watermark.
    """
    batch, arrival_us = events(cfg)
    order = np.argsort(arrival_us, kind="stable")
    arrived = mb.take(batch, order)
    times = mb.event_times_us(arrived)
    lag_us = round(cfg.watermark_lag_s * mb.US_PER_SECOND)
    watermark = np.iinfo(np.int64).min
    newest = np.iinfo(np.int64).min
    for start in range(0, arrived.num_rows, cfg.chunk_events):
        chunk = arrived.slice(start, cfg.chunk_events)
        newest = max(newest, int(times[start : start + cfg.chunk_events].max()))
        watermark = max(watermark, newest - lag_us)
        yield StreamChunk(chunk, watermark)
