"""The recommender against River's, on one time-ordered stream of ratings.

Ours runs the way a user runs it: ``pipelines/main.py --pipeline recommend`` through
``main.run`` with its default options (a streaming replay on the DirectRunner),
predictions written to Parquet and JSONL; its RMSE and MAE come from the files, its
rows/s from the run's wall time (building the pipeline and reading the input
included). River's ``reco.BiasedMF`` and ``reco.Baseline`` (their defaults) run the
same rows prequentially (``predict_one`` then ``learn_one``) in a plain loop, which
writes nothing. Also, on implicit feedback (the same interactions, every one a 1), a
prequential hit rate at 10 (recall@10 with one relevant item) on every
``--hit-every``-th event: whether the event's item is among the user's 10 best
unseen items, asked before the event is learnt: ours with negative sampling (4),
River's BiasedMF on the 1s (scoring every known item), and the most popular unseen
items.

One JSON line per model, then the targets: RMSE below BiasedMF's at >= 10x its
rows/s.

    python benchmarks/recommend.py                   # the synthetic drifting stream
    python benchmarks/recommend.py ratings.csv       # timestamp,user,item,rating
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from benchmarks.common import run_command_line
from model.reco.mf import MFConfig, StreamingMF
from model.streams.interactions import InteractionsConfig, interactions
from runners import patches
from transforms.io import read_parquet_dir

SPEEDUP = 10.0


def load(path: str | None, events: int, seed: int) -> tuple[str, dict[str, np.ndarray]]:
    """The rows (a CSV file, or the synthetic stream written to one) and their path."""
    if path is None:
        data = interactions(InteractionsConfig(events=events, seed=seed))
        path = os.path.join(tempfile.mkdtemp(prefix="sml-reco-"), "ratings.csv")
        pa_csv.write_csv(pa.table(data), path)
    convert = pa_csv.ConvertOptions(column_types={"user": pa.string(), "item": pa.string(),
                                                  "rating": pa.float64()})  # fmt: skip
    table = pa_csv.read_csv(path, convert_options=convert)
    return path, {name: table.column(name).to_numpy(zero_copy_only=False)
                  for name in ("user", "item", "rating")}  # fmt: skip


def errors(pred: np.ndarray, rating: np.ndarray) -> dict[str, float]:
    e = pred - rating
    return {"rmse": round(float(np.sqrt(np.mean(e**2))), 4),
            "mae": round(float(np.mean(np.abs(e))), 4)}  # fmt: skip


def ours(path: str, rows: dict[str, np.ndarray], hit_every: int) -> dict[str, Any]:
    cfg, summary, seconds = run_command_line(
        ["--pipeline", "recommend", "--source", "csv", "--input", path]
    )
    table = read_parquet_dir(os.path.join(cfg.output, "predictions"))
    assert table is not None
    order = np.argsort(table.column("event_id").to_numpy())
    pred = table.column("prediction").to_numpy()[order].astype(np.float64)
    line = {"model": "ours", "rows": len(pred), "balanced": summary.balanced,
            **errors(pred, rows["rating"]), "rows_per_s": round(len(pred) / seconds),
            "seconds": round(seconds, 2)}  # fmt: skip
    line["hit_rate_at_10"] = hit_rate_ours(rows, hit_every)
    return line


def hit_rate_ours(rows: dict[str, np.ndarray], every: int) -> float:
    """Implicit feedback (every interaction a 1), ours with negative sampling."""
    mf = StreamingMF(MFConfig(negatives=4))
    ones = np.ones(len(rows["user"]))
    hits = asked = 0
    n = len(rows["user"])
    for start in range(0, n, every):
        stop = min(start + every, n)
        user, item = rows["user"][start], rows["item"][start]
        if mf.users.ids.rows([user], add=False)[0] >= 0:
            asked += 1
            hits += item in {name for name, _ in mf.top_k(user, 10)}
        mf.predict_learn(rows["user"][start:stop], rows["item"][start:stop], ones[start:stop])
    return round(hits / max(1, asked), 4)


def hit_rate_popularity(rows: dict[str, np.ndarray], every: int) -> float:
    """The most interacted-with items so far that the user has not seen."""
    counts: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    hits = asked = 0
    for e, (u, i) in enumerate(zip(rows["user"].tolist(), rows["item"].tolist(), strict=True)):
        if e % every == 0 and u in seen:
            ranked = sorted(counts, key=lambda x: -counts[x])
            top = [x for x in ranked[: 10 + len(seen[u])] if x not in seen[u]][:10]
            asked += 1
            hits += i in top
        counts[i] = counts.get(i, 0) + 1
        seen.setdefault(u, set()).add(i)
    return round(hits / max(1, asked), 4)


def river(name: str, rows: dict[str, np.ndarray], hit_every: int) -> dict[str, Any]:
    from river import reco

    model = reco.BiasedMF(seed=0) if name == "BiasedMF" else reco.Baseline()
    users, items, ratings = rows["user"].tolist(), rows["item"].tolist(), rows["rating"].tolist()
    pred = np.empty(len(users))
    start = time.perf_counter()
    for e, (u, i, r) in enumerate(zip(users, items, ratings, strict=True)):
        pred[e] = model.predict_one(u, i)
        model.learn_one(u, i, r)
    seconds = time.perf_counter() - start
    line = {"model": f"river.{name}", "rows": len(pred), **errors(pred, rows["rating"]),
            "rows_per_s": round(len(pred) / seconds), "seconds": round(seconds, 2)}  # fmt: skip
    line["hit_rate_at_10"] = hit_rate_river(name, rows, hit_every)
    return line


def hit_rate_river(name: str, rows: dict[str, np.ndarray], every: int) -> float:
    from river import reco

    model = reco.BiasedMF(seed=0) if name == "BiasedMF" else reco.Baseline()
    seen: dict[str, set[str]] = {}
    known: dict[str, None] = {}  # items in the order they came
    hits = asked = 0
    for e, (u, i) in enumerate(zip(rows["user"], rows["item"], strict=True)):
        if e % every == 0 and u in seen:
            candidates = [x for x in known if x not in seen[u]]
            scores = [model.predict_one(u, x) for x in candidates]
            top = {candidates[j] for j in np.argsort(scores, kind="stable")[::-1][:10]}
            asked += 1
            hits += i in top
        model.learn_one(u, i, 1.0)  # implicit feedback: every interaction a 1
        seen.setdefault(u, set()).add(i)
        known.setdefault(i)
    return round(hits / max(1, asked), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file", nargs="?", help="CSV: timestamp,user,item,rating (default: synthetic)")
    ap.add_argument("--events", type=int, default=200_000, help="synthetic stream length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hit-every", type=int, default=200, help="hit rate: every Nth event")
    args = ap.parse_args(argv)
    patches.apply()  # as the command line does (runners/patches)
    path, rows = load(args.file, args.events, args.seed)
    lines = [ours(path, rows, args.hit_every)]
    print(json.dumps(lines[0]), flush=True)
    for name in ("BiasedMF", "Baseline"):
        lines.append(river(name, rows, args.hit_every))
        print(json.dumps(lines[-1]), flush=True)
    popular = {"model": "popularity", "hit_rate_at_10": hit_rate_popularity(rows, args.hit_every)}
    print(json.dumps(popular), flush=True)
    mine, mf = lines[0], lines[1]
    speedup = mine["rows_per_s"] / mf["rows_per_s"]
    targets = {
        "rmse_below_biasedmf": {"value": mine["rmse"], "goal": f"< {mf['rmse']}",
                                "met": mine["rmse"] < mf["rmse"]},
        "rows_per_s_vs_biasedmf": {"value": round(speedup, 2), "goal": f">= {SPEEDUP}x",
                                   "met": speedup >= SPEEDUP},
    }  # fmt: skip
    print(json.dumps({"benchmark": "recommend", "targets": targets,
                      "all_met": all(t["met"] for t in targets.values())}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
