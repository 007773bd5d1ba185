"""Incremental decoding with the rolling KV cache vs recomputing, for every new event,
the inputs its output depends on; many keys, window 1024, on the CPU, one run.

The model is :class:`model.streaming_transformer.StreamingTransformer` (``--layers``,
``--window``, ``--sinks``). For each position P in ``--positions``, ``--keys``
streams are brought to P in one batch:

- the sinks' inputs are decoded, then the cache jumps to ``P - reach`` and decodes
  ``reach`` more inputs (``reach = layers x (window - 1) + 1``: what an output at P
  depends on besides the sinks), so the cache holds what a stream P events long
  would hold; a stream that never had the skipped inputs, which the recompute side
  skips too (its positions are given);
- ``--steps`` more events a key are timed, one batched step for all keys each;
- the recompute side runs a full pass with the banded causal mask over the sinks and
  the reach latest inputs for each new event (keys in chunks of ``--chunk``), timed
  over ``--recompute-steps`` events, and its outputs are compared with the cache's.

One JSON line per position (``us_per_event`` cached and recomputed, ``speedup``,
``max_abs_diff``, ``bytes_per_key`` measured and by the formula), then the targets:
equal within 1e-5, >= 20x faster, memory per key as the formula says, per-event
latency flat (the slowest position within 1.5x of the fastest).

    python benchmarks/kv_cache.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch

from model.kv_cache import KVCache
from model.streaming_transformer import StreamingTransformer

TOLERANCE = 1e-5
TARGET_SPEEDUP = 20.0
FLAT = 1.5  # slowest / fastest per-event latency across positions


def _bring_to(
    net: StreamingTransformer, history: torch.Tensor, position: int
) -> tuple[KVCache, torch.Tensor]:
    """A cache of ``history``'s rows at ``position`` (see the module docstring) and
    the inputs the recompute side sees, with their positions."""
    rows, sinks = history.shape[0], net.spec.sinks
    cache = net.new_cache(rows)
    start = max(sinks, position - net.reach)
    for t in range(sinks):
        net.step(history[:, t], cache)
    cache.positions.fill_(start)  # ring slots not yet written hold zeros: see reach
    for t in range(start, position):
        net.step(history[:, t % history.shape[1]], cache)
    return cache, torch.tensor([*range(sinks), *range(start, position)])


def _measure(net: StreamingTransformer, args: argparse.Namespace, position: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(position)
    period = net.reach + net.spec.sinks + args.steps  # inputs repeat with this period
    history = torch.randn(args.keys, period, 1, generator=g)

    def value(t: int) -> torch.Tensor:
        return history[:, t % period]

    cache, seen = _bring_to(net, history, position)
    outputs = []
    start = time.perf_counter()
    for t in range(position, position + args.steps):
        outputs.append(net.step(value(t), cache))
    cached_s = (time.perf_counter() - start) / args.steps  # one batched step: all keys

    keys = min(args.keys, args.chunk)
    worst, start = 0.0, time.perf_counter()
    for i in range(args.recompute_steps):
        t = position + i
        kept = torch.cat([seen, torch.arange(position, t + 1)])
        inputs = torch.stack([value(int(p)) for p in kept], dim=1)[:keys]
        with torch.no_grad():
            again = net(inputs, kept)[:, -1]
        worst = max(worst, float((again - outputs[i][:keys]).abs().max()))
    recompute_s = (time.perf_counter() - start) / args.recompute_steps  # ``keys`` events

    held = sum(t.numel() * t.element_size() for t in cache.keys + cache.values) // args.keys
    per_event_cached = cached_s / args.keys * 1e6
    per_event_recompute = recompute_s / keys * 1e6
    return {
        "benchmark": "kv_cache",
        "position": position,
        "keys": args.keys,
        "window": net.spec.window,
        "sinks": net.spec.sinks,
        "layers": net.spec.layers,
        "us_per_step_all_keys": round(cached_s * 1e6, 1),
        "us_per_event_cached": round(per_event_cached, 2),
        "us_per_event_recompute": round(per_event_recompute, 1),
        "speedup": round(per_event_recompute / per_event_cached, 1),
        "max_abs_diff": worst,
        "bytes_per_key": held,
        "bytes_per_key_formula": net.spec.bytes_per_row,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=int, default=1024)
    ap.add_argument("--sinks", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--keys", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50, help="timed cached steps a position")
    ap.add_argument("--recompute-steps", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=4, help="keys a recompute pass takes")
    ap.add_argument("--positions", default="1000,10000,100000,1000000")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    net = StreamingTransformer(d_in=1, window=args.window, sinks=args.sinks, layers=args.layers,
                               seed=0).eval()  # fmt: skip
    warm = net.new_cache(args.keys)  # first calls pay for allocations: untimed
    for _ in range(20):
        net.step(torch.zeros(args.keys, 1), warm)
    lines = []
    for position in (int(p) for p in args.positions.split(",")):
        line = _measure(net, args, position)
        lines.append(line)
        print(json.dumps(line), flush=True)
    latencies = [x["us_per_event_cached"] for x in lines]
    diff = max(x["max_abs_diff"] for x in lines)
    speedup = min(x["speedup"] for x in lines)
    flat = max(latencies) / min(latencies)
    memory = all(x["bytes_per_key"] == x["bytes_per_key_formula"] for x in lines)
    targets = {
        "max_abs_diff": {"value": diff, "goal": f"<= {TOLERANCE}", "met": diff <= TOLERANCE},
        "speedup": {"value": speedup, "goal": f">= {TARGET_SPEEDUP}",
                    "met": speedup >= TARGET_SPEEDUP},
        "bytes_per_key": {"value": lines[0]["bytes_per_key"],
                          "goal": f"== (sinks + window) x layers x 2 x d_model x 4 = "
                                  f"{lines[0]['bytes_per_key_formula']}", "met": memory},
        "latency_flat": {"value": round(flat, 2), "goal": f"slowest / fastest <= {FLAT}",
                         "met": flat <= FLAT},
    }  # fmt: skip
    print(json.dumps({"benchmark": "kv_cache", "targets": targets,
                      "all_met": all(t["met"] for t in targets.values())}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
