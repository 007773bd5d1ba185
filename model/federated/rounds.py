"""Federated learning over a stream: devices learn on their own events, rounds by
event time, only deltas leave a device.

:class:`Federation` holds a global model (a logistic regression: weights and bias,
one flat vector) and one :class:`Device` per key. :meth:`Federation.learn` takes a
time-ordered micro-batch of many devices' events: each event is predicted by its
device's current model, then the device learns from it (prequential), within its
budget of steps per round. :meth:`Federation.end_round` closes a round (an
event-time window): every device with at least ``min_samples`` events in it sends
its delta (its model minus the global it started the round from), clipped, and
compressed with error feedback (within ``max_update_bytes`` when given), or masked
pairwise (``secure``: the aggregator can only sum them). The aggregator
(:meth:`Federation.aggregate`, which sees deltas and sample counts only) combines
them (FedAvg, or the buffered asynchronous variant), adds Gaussian noise when
private, and makes the next global version; every device starts the next round
from it (mixed with its own weights when personalizing). Modes: ``fedavg``,
``async``, ``local`` (no aggregation) and ``central`` (one learner for all events:
the reference).

>>> rng = np.random.default_rng(0)
>>> fed = Federation(FederatedConfig(features=3, seed=0))
>>> x = rng.normal(size=(40, 3)); y = (x[:, 0] > 0).astype(np.int64)
>>> pred = fed.learn(np.array(["a", "b"] * 20), x, y)
>>> report = fed.end_round()
>>> report.participants, report.version
(2, 1)
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.federated.aggregate import BufferedAsync, fedavg
from model.federated.compress import Compressor, TopK, decode, make_compressor
from model.federated.privacy import RDPAccountant, add_noise, clip_delta
from model.federated.secure import mask, unmask_sum
from model.learn import native

Mode = Literal["fedavg", "async", "local", "central"]


@dataclass(frozen=True)
class FederatedConfig:
    """Every field is validated."""

    features: int
    mode: Mode = "fedavg"
    lr: float = 0.1
    steps_per_round: int | None = None  # a device's budget of learning steps a round
    min_samples: int = 1  # fewer events in a round: the device sits it out
    compression: Literal["none", "topk", "int8"] = "none"
    topk_fraction: float = 0.05
    max_update_bytes: int | None = None  # a device's budget per update (top-k fits it)
    secure: bool = False  # pairwise masks: the aggregator sees only the sum
    clip: float | None = None  # client-level L2 clipping of each delta
    noise_multiplier: float = 0.0  # Gaussian noise at the aggregator (x clip)
    delta: float = 1e-5  # for the epsilon reported
    personalize: float = 0.0  # share of a device's own weights kept at a round start
    buffer: int = 8  # async: deltas per global version
    staleness_exponent: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.features < 1 or self.lr <= 0 or self.min_samples < 0:
            msg = f"need features >= 1, lr > 0, min_samples >= 0, got {self!r}"
            raise ValueError(msg)
        if self.mode not in ("fedavg", "async", "local", "central"):
            msg = f"mode must be fedavg, async, local or central, got {self.mode!r}"
            raise ValueError(msg)
        if self.noise_multiplier > 0 and self.clip is None:
            raise ValueError("noise needs a clip: the noise is noise_multiplier x clip")
        if self.noise_multiplier > 0 and (self.compression != "none" or self.max_update_bytes):
            # error feedback adds what earlier rounds left out: the update sent would no
            # longer be within the clip the noise is calibrated to
            raise ValueError("noise needs uncompressed updates (error feedback breaks the clip)")
        if self.max_update_bytes is not None:
            if self.max_update_bytes < 8 or self.compression == "int8":
                msg = (
                    "max_update_bytes needs top-k updates (or none, made top-k) and at least "
                    f"8 bytes, got {self.max_update_bytes!r} with {self.compression!r}"
                )
                raise ValueError(msg)
        if self.secure and (self.compression != "none" or self.mode != "fedavg"
                            or self.max_update_bytes is not None):  # fmt: skip
            raise ValueError("secure aggregation sums dense updates: fedavg, no compression")
        if not 0 <= self.personalize <= 1:
            msg = f"personalize must be in [0, 1], got {self.personalize!r}"
            raise ValueError(msg)


KERNEL = Path(__file__).with_name("logistic_kernel.c")
_p, _i64 = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "logistic_prequential": (
        None,
        [_i64, ctypes.c_int32, _p, _p, _p, _p, _p, _i64, ctypes.c_double, _p, _p],
    )
}


def _walk(rows: np.ndarray, x: np.ndarray, y: np.ndarray, w: np.ndarray, steps: np.ndarray,
          budget: int, lr: float, out: np.ndarray, learned: np.ndarray) -> None:  # fmt: skip
    """The kernel's walk over the events (numpy where there is no compiler)."""
    lib = native.compiled(KERNEL, _SIGNATURES)
    n, d = x.shape
    if lib is not None:
        lib.logistic_prequential(n, d, rows.ctypes.data, x.ctypes.data, y.ctypes.data,
                                 w.ctypes.data, steps.ctypes.data, budget, lr,
                                 out.ctypes.data, learned.ctypes.data)  # fmt: skip
        return
    for e in range(n):
        r = rows[e]
        p = 1.0 / (1.0 + math.exp(-min(30.0, max(-30.0, float(x[e] @ w[r, :-1] + w[r, -1])))))
        out[e] = int(p > 0.5)
        if 0 <= budget <= steps[r]:
            continue  # this round's budget is spent: predict only
        g = p - y[e]
        w[r, :-1] -= lr * g * x[e]
        w[r, -1] -= lr * g
        steps[r] += 1
        learned[r] += 1


@dataclass
class Device:
    """One device: its model, the global it started the round from, its round."""

    weights: np.ndarray
    start: np.ndarray
    based_on: int = 0  # the global version it started from
    samples: int = 0  # events learnt this round
    steps: int = 0
    compressor: Compressor | None = None
    bytes_sent: int = 0


@dataclass
class RoundReport:
    """What one round did."""

    version: int
    participants: int = 0
    sat_out: int = 0
    bytes_sent: int = 0
    epsilon: float | None = None  # None: no noise, no privacy guarantee


@dataclass
class Federation:
    """Devices and the aggregator; see the module docstring."""

    config: FederatedConfig
    version: int = 0
    devices: dict[str, Device] = field(default_factory=dict)
    rounds: int = 0

    def __post_init__(self) -> None:
        self.global_weights = np.zeros(self.config.features + 1)
        self.rng = np.random.default_rng(self.config.seed)
        self.accountant = RDPAccountant()
        self.server = BufferedAsync(self.config.buffer, self.config.staleness_exponent)
        # (round, what the aggregator received): the latest rounds, for inspection
        self.aggregated_inputs: deque[tuple[int, list[Any]]] = deque(maxlen=8)
        self.stats: dict[str, list[int]] = {}  # per key: events predicted, correct

    # -- devices ----------------------------------------------------------------------
    def device(self, key: str) -> Device:
        device = self.devices.get(key)
        if device is None:
            start = self.global_weights.copy()
            compressor: Compressor | None = None
            c = self.config
            if c.max_update_bytes is not None:
                fraction = c.topk_fraction if c.compression == "topk" else 1.0
                compressor = TopK(fraction, max_bytes=c.max_update_bytes)
            elif c.compression != "none":
                compressor = make_compressor(c.compression, fraction=c.topk_fraction,
                                             seed=c.seed + len(self.devices))  # fmt: skip
            device = self.devices[key] = Device(start.copy(), start, self.version,
                                                compressor=compressor)  # fmt: skip
        return device

    def learn(self, keys: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Each event's predicted class by its device's model before it, then learnt
        (events in the order given; in C where a compiler is, :file:`logistic_kernel.c`).
        The batch's devices' rows are gathered into one matrix, walked, and put back."""
        keys = np.asarray(keys).astype(str)
        names, first, codes = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # devices made in the order they came
        central = self.config.mode == "central"
        devices = [self.device("*" if central else str(names[i])) for i in order]
        rank = np.empty(len(names), np.int64)
        rank[order] = np.arange(len(names))
        rows = np.zeros(len(keys), np.int64) if central else rank[codes.ravel()]
        if central:
            devices = devices[:1]
        w = np.stack([d.weights for d in devices]).astype(np.float64)
        steps = np.array([d.steps for d in devices], np.int64)
        learned = np.zeros(len(devices), np.int64)
        out = np.empty(len(keys), np.int64)
        budget = -1 if self.config.steps_per_round is None else self.config.steps_per_round
        xs = np.ascontiguousarray(x, np.float64)
        ys = np.ascontiguousarray(y, np.int64)
        _walk(rows, xs, ys, w, steps, budget, self.config.lr, out, learned)
        for d, weights, n_steps, n in zip(devices, w, steps.tolist(), learned.tolist(),
                                          strict=True):  # fmt: skip
            d.weights, d.steps, d.samples = weights, n_steps, d.samples + n
        seen = np.bincount(codes.ravel(), minlength=len(names))
        right = np.bincount(codes.ravel(), weights=out == ys, minlength=len(names))
        for name, n, ok in zip(names.tolist(), seen.tolist(), right.tolist(), strict=True):
            counts = self.stats.setdefault(name, [0, 0])
            counts[0] += n
            counts[1] += int(ok)
        return out

    # -- rounds ---------------------------------------------------------------------------
    def end_round(self) -> RoundReport:
        """Close the round: deltas out, aggregated, the next global version in."""
        c = self.config
        self.rounds += 1
        report = RoundReport(version=self.version)
        if c.mode in ("local", "central"):
            for d in self.devices.values():
                d.samples = d.steps = 0
            return report
        sent: list[tuple[Any, int, int]] = []  # (encoded or raw delta, samples, based on)
        taking = [k for k in sorted(self.devices)
                  if self.devices[k].samples >= max(1, c.min_samples)]  # fmt: skip
        report.sat_out = len(self.devices) - len(taking)
        secret = f"{c.seed}:{self.rounds}".encode()  # (a deployment: pairwise key agreement)
        for key in taking:
            d = self.devices[key]
            delta = d.weights - d.start
            if c.clip is not None:
                delta = clip_delta(delta, c.clip)
            if c.secure:  # weighted on the device (equal weights under DP), then masked
                payload = delta if c.noise_multiplier > 0 else d.samples * delta
                masked = mask(payload, key, taking, secret)
                nbytes = 4 + masked.nbytes
                d.bytes_sent += nbytes
                report.bytes_sent += nbytes
                sent.append((masked, d.samples, d.based_on))
            elif d.compressor is not None:
                encoded = d.compressor.encode(delta)
                d.bytes_sent += encoded.nbytes
                report.bytes_sent += encoded.nbytes
                sent.append((encoded, d.samples, d.based_on))
            else:
                nbytes = 4 + 4 * len(delta)  # float32 coordinates and a count
                d.bytes_sent += nbytes
                report.bytes_sent += nbytes
                sent.append((delta.astype(np.float32), d.samples, d.based_on))
            report.participants += 1
        step = self.aggregate(sent)
        if step is not None:
            self.global_weights = self.global_weights + step
            self.version += 1
        report.version = self.version
        report.epsilon = self.accountant.epsilon(c.delta) if c.noise_multiplier > 0 else None
        based_on = self.server.version if c.mode == "async" else self.version
        for d in self.devices.values():  # every device starts the next round from it
            mixed = (1 - c.personalize) * self.global_weights + c.personalize * d.weights
            # its next delta: what it learns next round, not its personal offset again
            d.weights, d.start = mixed, mixed.copy()
            d.based_on, d.samples, d.steps = based_on, 0, 0
        return report

    def aggregate(self, sent: list[tuple[Any, int, int]]) -> np.ndarray | None:
        """The global step from what devices sent (deltas, sample counts, versions):
        the only place device updates meet. It never sees an event."""
        c = self.config
        self.aggregated_inputs.append((self.rounds, [s[0] for s in sent]))
        if not sent:
            return None
        if c.secure:  # only the sum of the masked updates means anything
            total_delta = unmask_sum([s for s, _, _ in sent])
        else:
            deltas = [np.asarray(s if isinstance(s, np.ndarray) else decode(s), np.float64)
                      for s, _, _ in sent]  # fmt: skip
            if c.noise_multiplier == 0:
                if c.mode == "async":
                    return self._buffered(deltas, sent)
                return fedavg(deltas, [n for _, n, _ in sent])
            total_delta = np.sum(deltas, axis=0)
        if c.noise_multiplier > 0:
            # each device's clipped delta counts once (equal weights: the sum's
            # sensitivity is the clip); noise on the sum, then the mean. Who takes part
            # depends on the data, not on a coin: no subsampling discount (q = 1)
            assert c.clip is not None
            noisy = add_noise(total_delta, c.clip, c.noise_multiplier, self.rng)
            self.accountant.step(q=1.0, noise_multiplier=c.noise_multiplier)
            return noisy / len(sent)
        samples = sum(n for _, n, _ in sent)  # secure: devices sent samples x delta
        return total_delta / samples if samples else None

    def _buffered(
        self, deltas: list[np.ndarray], sent: list[tuple[Any, int, int]]
    ) -> np.ndarray | None:
        step = None
        for delta, (_, samples, based_on) in zip(deltas, sent, strict=True):
            out = self.server.add(delta, samples, based_on)
            step = out if step is None else (step if out is None else step + out)
        return step

    # -- state ------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """Everything, picklable: a restored federation goes on exactly."""
        return {
            "global": self.global_weights.copy(), "version": self.version,
            "rounds": self.rounds, "rng": self.rng.bit_generator.state,
            "accountant": self.accountant.snapshot(), "server": self.server.snapshot(),
            "stats": {k: list(v) for k, v in self.stats.items()},
            "devices": {
                key: {"weights": d.weights.copy(), "start": d.start.copy(),
                      "based_on": d.based_on, "samples": d.samples, "steps": d.steps,
                      "bytes_sent": d.bytes_sent,
                      "compressor": None if d.compressor is None else d.compressor.snapshot()}
                for key, d in self.devices.items()
            },
        }  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.global_weights = np.asarray(state["global"], np.float64).copy()
        self.version, self.rounds = int(state["version"]), int(state["rounds"])
        self.rng.bit_generator.state = state["rng"]
        self.accountant.restore(state["accountant"])
        self.server.restore(state["server"])
        self.stats = {k: list(v) for k, v in state["stats"].items()}
        self.devices = {}
        for key, d in state["devices"].items():
            device = self.device(key)  # a fresh compressor of the configured kind
            device.weights = np.asarray(d["weights"], np.float64).copy()
            device.start = np.asarray(d["start"], np.float64).copy()
            device.based_on, device.samples = int(d["based_on"]), int(d["samples"])
            device.steps, device.bytes_sent = int(d["steps"]), int(d["bytes_sent"])
            if device.compressor is not None and d["compressor"] is not None:
                device.compressor.restore(d["compressor"])

    # -- figures ----------------------------------------------------------------------------
    def accuracy(self, keys: list[str] | None = None) -> float:
        """Prequential accuracy over the events of ``keys`` (default: all)."""
        chosen = [self.stats[k] for k in (keys or list(self.stats)) if k in self.stats]
        seen = sum(s[0] for s in chosen)
        return sum(s[1] for s in chosen) / seen if seen else math.nan

    @property
    def bytes_sent(self) -> int:
        return sum(d.bytes_sent for d in self.devices.values())
