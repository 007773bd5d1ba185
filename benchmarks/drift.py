"""Drift detectors: ours (vectorized over micro-batches) vs River's, one run.

    python benchmarks/drift.py          # 20 seeds x 3 change-point streams of 10,000 errors

Streams of prequential errors (1: the model was wrong), a change at 5,000: ``abrupt``
(error rate 0.1 -> 0.4), ``gradual`` (0.1 rising to 0.4 over 1,000 values) and
``none`` (0.1 throughout: every alarm is false). Per detector and stream: the mean
detection delay (first alarm at or after the change, values after it; a run without
one is a miss), the mean number of false alarms per run (alarms before the change),
and values/s. Ours take the values in micro-batches of ``--batch`` (``update_many``);
River's one at a time (``update``), as each is meant to be used.

- ``ours_page_hinkley`` (:class:`model.drift.PageHinkley` with River's defaults:
  delta 0.005, threshold 50, alpha 0.9999, 30 values first) vs ``river_page_hinkley``
  (``river.drift.PageHinkley()``);
- ``ours_adwin`` (:class:`model.adwin.ADWIN`, River's defaults: delta 0.002, clock 32,
  5 buckets a row; a C kernel over each micro-batch) vs ``river_adwin``
  (``river.drift.ADWIN()``);
- ``ours_ddm`` (:class:`model.drift.DDM`, Gama's levels 2 and 3, as the paper writes
  it) and, for reference, ``river_ddm`` (``river.drift.binary.DDM()``, whose rules
  differ in detail).

Targets (the issue's), ours vs River's Page-Hinkley and ADWIN: delay and false alarms
no worse, throughput >= 10x.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model.adwin import ADWIN  # noqa: E402
from model.drift import DDM, PageHinkley  # noqa: E402

N, CHANGE = 10_000, 5_000
TARGET_SPEEDUP = 10.0
PAIRS = ("page_hinkley", "adwin")  # ours vs River's, the same algorithm: held to the targets


def errors(kind: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    i = np.arange(N)
    if kind == "abrupt":
        rate = np.where(i < CHANGE, 0.1, 0.4)
    elif kind == "gradual":
        rate = 0.1 + 0.3 * np.clip((i - CHANGE) / 1_000, 0, 1)
    else:
        rate = np.full(N, 0.1)
    return (rng.random(N) < rate).astype(np.float64)


def ours(make: Callable[[], Any], batch: int) -> Callable[[np.ndarray], tuple[list[int], float]]:
    def run(x: np.ndarray) -> tuple[list[int], float]:
        det = make()
        found: list[int] = []
        start = time.perf_counter()
        for at in range(0, len(x), batch):
            found.extend((det.update_many(x[at : at + batch]).drifts + at).tolist())
        return found, time.perf_counter() - start

    return run


def river(make: Callable[[], Any]) -> Callable[[np.ndarray], tuple[list[int], float]]:
    def run(x: np.ndarray) -> tuple[list[int], float]:
        det = make()
        found: list[int] = []
        values = x.tolist()
        start = time.perf_counter()
        for i, v in enumerate(values):
            det.update(v)
            if det.drift_detected:
                found.append(i)
        return found, time.perf_counter() - start

    return run


def detectors(batch: int) -> dict[str, Callable[[np.ndarray], tuple[list[int], float]]]:
    from river import drift
    from river.drift import binary

    return {
        "ours_page_hinkley": ours(
            lambda: PageHinkley(delta=0.005, threshold=50.0, min_samples=30, alpha=0.9999), batch
        ),
        "river_page_hinkley": river(drift.PageHinkley),
        "ours_adwin": ours(ADWIN, batch),
        "river_adwin": river(drift.ADWIN),
        "ours_ddm": ours(DDM, batch),
        "river_ddm": river(binary.DDM),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1024, help="values per micro-batch (ours)")
    args = ap.parse_args(argv)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in ("abrupt", "gradual", "none"):
        for name, run in detectors(args.batch).items():
            delays, false_alarms, seconds, misses = [], [], 0.0, 0
            for seed in range(args.seeds):
                found, sec = run(errors(kind, seed))
                seconds += sec
                before = [a for a in found if a < CHANGE] if kind != "none" else found
                false_alarms.append(len(before))
                after = [a for a in found if a >= CHANGE]
                if kind != "none":
                    if after:
                        delays.append(after[0] - CHANGE)
                    else:
                        misses += 1
            r = {
                "mean_delay": round(float(np.mean(delays)), 1) if delays else None,
                "misses": misses if kind != "none" else None,
                "false_alarms_per_run": round(float(np.mean(false_alarms)), 3),
                "values_per_s": round(args.seeds * N / seconds),
            }
            results[(kind, name)] = r
            print(json.dumps({"benchmark": "drift", "stream": kind, "detector": name, **r}))
    targets: dict[str, dict[str, Any]] = {}
    for kind, pair in itertools.product(("abrupt", "gradual", "none"), PAIRS):
        a, b = results[(kind, f"ours_{pair}")], results[(kind, f"river_{pair}")]
        if kind != "none":
            ok = a["misses"] <= b["misses"] and (a["mean_delay"] or 0) <= (b["mean_delay"] or 0)
            targets[f"{pair}_{kind}_delay"] = {
                "value": a["mean_delay"],
                "goal": f"<= {b['mean_delay']}",
                "met": bool(ok),
            }
        targets[f"{pair}_{kind}_false_alarms"] = {
            "value": a["false_alarms_per_run"],
            "goal": f"<= {b['false_alarms_per_run']}",
            "met": a["false_alarms_per_run"] <= b["false_alarms_per_run"],
        }
        speed = a["values_per_s"] / b["values_per_s"]
        targets[f"{pair}_{kind}_speedup"] = {
            "value": round(speed, 1),
            "goal": TARGET_SPEEDUP,
            "met": speed >= TARGET_SPEEDUP,
        }
    met = all(t["met"] for t in targets.values())
    print(json.dumps({"benchmark": "drift", "targets": targets, "all_met": met}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
