"""Federated streaming learning on a non-IID stream of devices, every strategy in one run.

The stream (:mod:`model.streams.devices`): 60 devices by default, each with its own
feature shift and a share of its own concept, log-normal volumes (a quarter of the
devices have little data), a concept that drifts and then jumps. Rounds are
event-time windows of ``--round-s`` seconds. On the same events, in the same order:

- ``centralized``: one learner on every event (what shipping raw data would buy);
- ``local``: each device alone, never aggregated;
- ``fedavg``: FedAvg weighted by samples, one round a window;
- ``fedavg_topk``: the same with top-k sparsified updates (error feedback);
- ``fedavg_int8``: the same with 8-bit quantized updates (error feedback);
- ``fedavg_dp``: clipped updates and Gaussian noise at the aggregator, epsilon
  accounted (delta 1e-5);
- ``async``: the buffered asynchronous variant with staleness weights.

One JSON line per strategy: prequential accuracy at the end, on the little-data
devices (the quarter with the fewest events), per round, bytes sent, epsilon. Then
the targets: FedAvg within 2 points of centralized; FedAvg at least 5 points above
local-only on the little-data devices; compressed updates at least 10x fewer bytes
for at most 1 point of accuracy.

    python benchmarks/federated.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any

import numpy as np

from model.federated.rounds import FederatedConfig, Federation
from model.streams.devices import DevicesConfig, device_stream

STRATEGIES: dict[str, dict[str, Any]] = {
    "centralized": {"mode": "central"},
    "local": {"mode": "local"},
    "fedavg": {},
    "fedavg_topk": {"compression": "topk", "topk_fraction": 0.05},
    "fedavg_int8": {"compression": "int8"},
    "fedavg_dp": {"clip": 1.0, "noise_multiplier": 1.0},
    "async": {"mode": "async"},
}


def run(name: str, stream: dict[str, np.ndarray], small: list[str], round_s: float,
        seed: int) -> dict[str, Any]:  # fmt: skip
    features = stream["x"].shape[1]
    fed = Federation(FederatedConfig(features=features, seed=seed, **STRATEGIES[name]))
    round_of = ((stream["timestamp"] - stream["timestamp"][0]) // round_s).astype(np.int64)
    bounds = np.flatnonzero(np.diff(round_of)) + 1
    starts, stops = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(round_of)]])
    per_round, participants = [], []
    epsilon: float | None = None
    start = time.perf_counter()
    for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
        pred = fed.learn(stream["key"][a:b], stream["x"][a:b], stream["y"][a:b])
        per_round.append(round(float(np.mean(pred == stream["y"][a:b])), 4))
        report = fed.end_round()
        epsilon = report.epsilon if report.epsilon is not None else epsilon
        participants.append(report.participants)
    seconds = time.perf_counter() - start
    return {"strategy": name, "accuracy": round(fed.accuracy(), 4),
            "accuracy_little_data": round(fed.accuracy(small), 4),
            "bytes_sent": fed.bytes_sent,
            "epsilon": None if epsilon is None else round(epsilon, 3), "delta": 1e-5,
            "rounds": len(per_round), "mean_participants": round(float(np.mean(participants)), 1),
            "events_per_s": round(len(stream["y"]) / seconds),
            "accuracy_per_round": per_round}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=60)
    ap.add_argument("--events", type=int, default=120_000)
    ap.add_argument("--round-s", type=float, default=2_000.0, help="a round's window (s)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    stream = device_stream(DevicesConfig(devices=args.devices, events=args.events,
                                         seed=args.seed))  # fmt: skip
    counts = Counter(stream["key"].tolist())
    little = sorted(counts, key=lambda k: counts[k])[: max(1, len(counts) // 4)]
    lines = {}
    for name in STRATEGIES:
        lines[name] = run(name, stream, little, args.round_s, args.seed)
        print(json.dumps(lines[name]), flush=True)
    fed, central, local = lines["fedavg"], lines["centralized"], lines["local"]
    topk = lines["fedavg_topk"]
    gap = central["accuracy"] - fed["accuracy"]
    gain = fed["accuracy_little_data"] - local["accuracy_little_data"]
    ratio = fed["bytes_sent"] / max(1, topk["bytes_sent"])
    loss = fed["accuracy"] - topk["accuracy"]
    targets = {
        "fedavg_vs_centralized_points": {"value": round(100 * gap, 2),
                                         "goal": "<= 2 points below", "met": gap <= 0.02},
        "fedavg_vs_local_little_data_points": {"value": round(100 * gain, 2),
                                               "goal": ">= 5 points above", "met": gain >= 0.05},
        "compression_bytes_ratio": {"value": round(ratio, 1), "goal": ">= 10x fewer",
                                    "met": ratio >= 10},
        "compression_accuracy_loss_points": {"value": round(100 * loss, 2),
                                             "goal": "<= 1 point", "met": loss <= 0.01},
    }  # fmt: skip
    print(json.dumps({"benchmark": "federated", "devices": len(counts),
                      "little_data_devices": len(little), "targets": targets,
                      "all_met": all(t["met"] for t in targets.values())}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
