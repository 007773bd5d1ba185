"""Real streams as a user brings them: our default command line vs River, one run.

    python benchmarks/real_streams.py                        # weather and Elec2 (data/)
    python benchmarks/real_streams.py FILE --label-column C  # any labelled CSV

``ours_streaming`` and ``ours_bounded``: the classify pipeline through ``main.run``
with the command line's defaults (``pipelines/main.py --source csv --input FILE
--label-column C``, streaming and ``--no-streaming``): window and frame from the data's
time scale, coupled predict-then-learn (exact prequential: every event scored by the
model that has learned every earlier event, River's test-then-train order),
standardized features, one step per event, the lagged label; ``ours_streaming_decoupled``
with ``--mode decoupled`` (each window scored by the version trained through the window
before it) and ``ours_streaming_adapt_*`` with each ``--adapt`` policy (which one won is
printed). rows/s is ``events / wall time`` of ``main.run`` (building and running the
pipeline, Beam's start-up in it, and the report), after a warm-up run of the file's
first rows in each mode, so that the process's one-time costs (imports, torch's first
optimizer) do not fall on whichever run comes first.

River (``pip install -r requirements-bench.txt``), on the same rows in the same
order, test-then-train, one core: a no-change classifier (the key's previous label),
``StandardScaler | LogisticRegression``, ``HoeffdingAdaptiveTreeClassifier`` and
``ARFClassifier(n_models=10)``; its rows/s is that of its ``predict_one``/``learn_one``
loop (no reading, no start-up).

Targets (the issue's): our accuracy >= ARF's and >= no-change's; our rows/s >= 50x
ARF's; a 45k-row CSV's default run under 30 s, streaming and bounded (checked on the
stream given, scaled to 45k rows by its own rows/s).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import prequential, run_command_line  # noqa: E402
from runners import patches  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEATHER = os.path.join(ROOT, "benchmarks", "data", "weather", "weather.csv")
ELEC2 = os.path.join(ROOT, "benchmarks", "data", "elec2", "elec2.csv")
STREAMS = ((WEATHER, "target"), (ELEC2, "class"))  # the default: both real streams here
LARGE_ROWS = 45_000  # the 45k-row stream: its default run must take < 30 s
TARGET_S, TARGET_SPEEDUP = 30.0, 50.0
WARM_UP_ROWS = 1_000  # a first run of the file's head, not reported
POLICIES = {
    "none": "ours_streaming",
    "reset": "ours_streaming_adapt_reset",
    "lr-boost": "ours_streaming_adapt_lr-boost",
    "background": "ours_streaming_adapt_background",
}


def read_rows(path: str, label: str, time_column: str) -> tuple[list[dict], list[int], list[str]]:
    """Features (dicts of floats), labels and keys of the rows our parser accepts,
    in file order (rows it dead-letters are left out of River's side too)."""
    xs, ys, keys = [], [], []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            try:
                y = int(float(row[label]))
                x = {
                    k: float(v)
                    for k, v in row.items()
                    if k not in (label, time_column, "key", "event_id")
                }
            except (TypeError, ValueError):
                continue
            xs.append(x)
            ys.append(y)
            keys.append(row.get("key", ""))
    return xs, ys, keys


def river_models() -> dict[str, Any]:
    from river import compose, forest, linear_model, preprocessing, tree

    return {
        "river_scaler_logreg": compose.Pipeline(
            preprocessing.StandardScaler(), linear_model.LogisticRegression()
        ),
        "river_hoeffding_adaptive_tree": tree.HoeffdingAdaptiveTreeClassifier(seed=0),
        "river_arf10": forest.ARFClassifier(n_models=10, seed=0),
    }


def run_no_change(ys: list[int], keys: list[str]) -> dict[str, Any]:
    start = time.perf_counter()
    last: dict[str, int] = {}
    correct = 0
    for y, k in zip(ys, keys, strict=True):
        correct += int(last.get(k) == y)
        last[k] = y
    return {"accuracy": correct / len(ys), "seconds": time.perf_counter() - start}


def run_ours(
    path: str, label: str, time_column: str, *, streaming: bool, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    argv = ["--source", "csv", "--input", path, "--label-column", label]
    argv += ["--time-column", time_column, *extra]
    argv += [] if streaming else ["--no-streaming"]
    cfg, summary, seconds = run_command_line(argv)
    labelled = sum(w.labelled for w in summary.windows)
    correct = sum(w.correct for w in summary.windows)
    return {
        "accuracy": correct / labelled if labelled else 0.0,
        "seconds": seconds,
        "events": summary.events_in,
        "dead_lettered": summary.dead_lettered,
        "balanced": summary.balanced,
        "windows": len(summary.windows),
        "model_versions": summary.model_versions,
        "window_s": cfg.window.size_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="a labelled CSV (default: weather and Elec2)")
    ap.add_argument("--label-column", default="target", help="with FILE: its label column")
    ap.add_argument("--time-column", default="timestamp")
    args = ap.parse_args(argv)
    river_models()  # River missing: say so now, not after our runs
    patches.apply()  # as the command line does (runners/patches)
    streams = STREAMS if args.file is None else ((args.file, args.label_column),)
    met = [bench_stream(path, label, args.time_column) for path, label in streams]
    print(json.dumps({"benchmark": "real_streams", "all_met": all(met)}), flush=True)
    return 0


def bench_stream(path: str, label: str, time_column: str) -> bool:
    """Every side on one stream; prints its lines and its targets; True if all met."""
    stream = os.path.basename(path)
    xs, ys, keys = read_rows(path, label, time_column)
    results: dict[str, dict[str, Any]] = {}
    warm = os.path.join(tempfile.mkdtemp(prefix="sml-real-"), "head.csv")
    with open(path, encoding="utf-8") as src, open(warm, "w", encoding="utf-8") as dst:
        dst.writelines(itertools.islice(src, WARM_UP_ROWS + 1))
    for streaming in (True, False):  # one-time costs (imports, first optimizer) paid here
        run_ours(warm, label, time_column, streaming=streaming)
    for mode in ("streaming", "bounded"):
        results[f"ours_{mode}"] = run_ours(path, label, time_column, streaming=mode == "streaming")
    results["ours_streaming_decoupled"] = run_ours(
        path, label, time_column, streaming=True, extra=("--mode", "decoupled")
    )
    for policy in ("reset", "lr-boost", "background"):  # the adaptation policies, streaming
        r = run_ours(path, label, time_column, streaming=True, extra=("--adapt", policy))
        results[f"ours_streaming_adapt_{policy}"] = r
    results["river_no_change"] = run_no_change(ys, keys)
    for name, model in river_models().items():
        results[name] = prequential(model, xs, ys)
    for name, r in results.items():
        events = r.get("events", len(ys))
        line = {"benchmark": "real_streams", "stream": stream, "side": name, "rows": events}
        line.update({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()})
        line["rows_per_s"] = round(events / r["seconds"]) if r["seconds"] > 0 else None
        print(json.dumps(line), flush=True)
    policies = {p: results[k]["accuracy"] for p, k in POLICIES.items()}
    won = max(policies, key=lambda p: policies[p])
    print(json.dumps({"benchmark": "real_streams", "stream": stream, "adaptation": policies,
                      "policy_won": won}), flush=True)  # fmt: skip
    ours = results["ours_streaming"]  # the default command line: no adaptation
    arf, still = results["river_arf10"], results["river_no_change"]
    ours_rate = ours["events"] / ours["seconds"]
    arf_rate = len(ys) / arf["seconds"]
    large = {m: LARGE_ROWS / (results[f"ours_{m}"]["events"] / results[f"ours_{m}"]["seconds"])
             for m in ("streaming", "bounded")}  # fmt: skip
    targets = {
        "accuracy_vs_arf10": [round(ours["accuracy"], 4), round(arf["accuracy"], 4)],
        "accuracy_vs_no_change": [round(ours["accuracy"], 4), round(still["accuracy"], 4)],
        "rows_per_s_vs_arf10": [round(ours_rate / arf_rate, 1), TARGET_SPEEDUP],
        "seconds_45k_streaming": [round(large["streaming"], 1), TARGET_S],
        "seconds_45k_bounded": [round(large["bounded"], 1), TARGET_S],
    }
    met = {
        "accuracy_vs_arf10": ours["accuracy"] >= arf["accuracy"],
        "accuracy_vs_no_change": ours["accuracy"] >= still["accuracy"],
        "rows_per_s_vs_arf10": ours_rate / arf_rate >= TARGET_SPEEDUP,
        "seconds_45k_streaming": large["streaming"] < TARGET_S,
        "seconds_45k_bounded": large["bounded"] < TARGET_S,
    }
    print(
        json.dumps(
            {
                "benchmark": "real_streams",
                "stream": stream,
                "targets": {
                    k: {"value": v[0], "goal": v[1], "met": met[k]} for k, v in targets.items()
                },
                "all_met": all(met.values()),
            }
        ),
        flush=True,
    )
    return all(met.values())


if __name__ == "__main__":
    sys.exit(main())
