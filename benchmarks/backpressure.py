"""The backpressure study: every memory strategy on one bursty training stream.

A small Transformer regressor trains on a stream of batches of variable-length
sequences (padded per micro-batch, masked) whose lengths burst to 10x for a few
batches at a time, under a memory budget measured per step (on the CPU by the counting allocator,
:class:`model.memory.AllocatorMemory`, on CUDA by CUDA's) with a hard cap above
it where the allocator refuses (out-of-memory). Every strategy trains a fresh copy of
the same model on the same stream, in one run:

- ``unbounded``: the whole batch at once; an out-of-memory error splits it in halves
  (accumulated, so it is still one optimizer step per batch: the reference);
- ``fixed_large`` / ``fixed_small``: fixed micro-batches, a step each;
- ``aimd``, ``pid``, ``credit``: adaptive micro-batches, a step each;
- ``accumulate``: credit-based micro-batches accumulated into one step per batch;
- ``accumulate_aimd``: AIMD micro-batches accumulated.

The batches reach the trainer from a producer thread through the credit-based
:class:`model.loader.BackpressuredLoader`. One JSON line per strategy (``strategy``,
``samples_per_s``, ``violations`` = ``ooms`` + ``over_budget``, ``peak_bytes``,
``final_loss`` on held-out sequences, ``micro_batches``), one for the loader's queue
under ``accumulate``, one for the host memory of a long run of ``accumulate``, then
the targets line. ``--output DIR`` writes ``backpressure.svg`` and
``report.html`` there.

    python benchmarks/backpressure.py
    python benchmarks/backpressure.py --device cuda --batches 40
"""

from __future__ import annotations

import argparse
import html
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmarks.common import take_turns
from model.backpressure import (
    AIMD,
    Accumulating,
    Controller,
    CreditBased,
    FixedSize,
    PIDHeadroom,
    Unbounded,
)
from model.budgeted import BudgetedTrainer
from model.device import resolve_device
from model.loader import BackpressuredLoader
from model.memory import MemorySignal, memory_signal, resident_bytes
from pipelines import svg

THROUGHPUT_SHARE = 0.9
LOSS_TOLERANCE = 0.01


class SequenceRegressor(nn.Module):
    """A Transformer encoder over a padded, masked batch of sequences of values."""

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(1, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 2 * d_model, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        h = self.encoder(self.inp(x.unsqueeze(-1)), src_key_padding_mask=pad)
        keep = (~pad).unsqueeze(-1).to(h.dtype)
        return self.out((h * keep).sum(1) / keep.sum(1)).squeeze(-1)


def collate(seqs: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence: values and the padding mask (True = padding)."""
    length = max(len(s) for s in seqs)
    x = np.zeros((len(seqs), length), np.float32)
    pad = np.ones((len(seqs), length), bool)
    for i, s in enumerate(seqs):
        x[i, : len(s)] = s
        pad[i, : len(s)] = False
    return torch.from_numpy(x).to(device), torch.from_numpy(pad).to(device)


def target(seq: np.ndarray) -> float:
    """What the model learns: a nonlinear summary of the whole sequence."""
    return float(np.tanh(2 * seq.mean()) + 0.5 * (seq > 1).mean() - 0.25 * np.abs(seq[-4:]).mean())


@dataclass(frozen=True)
class Stream:
    """Batches of sequences whose lengths burst to ``burst_factor`` x."""

    batches: int = 100
    batch_size: int = 32
    min_len: int = 8
    max_len: int = 24
    burst_factor: int = 10
    burst_every: int = 20
    burst_length: int = 4
    seed: int = 0

    def bursting(self, b: int) -> bool:
        return b % self.burst_every >= self.burst_every - self.burst_length

    def batch(self, b: int) -> tuple[list[np.ndarray], np.ndarray]:
        rng = np.random.default_rng((self.seed, b))
        scale = self.burst_factor if self.bursting(b) else 1
        lengths = rng.integers(self.min_len * scale, self.max_len * scale + 1, self.batch_size)
        seqs = [rng.standard_normal(n).astype(np.float32) + rng.normal(0, 0.5) for n in lengths]
        return seqs, np.array([target(s) for s in seqs], np.float32)

    def held_out(self, n: int = 128) -> tuple[list[np.ndarray], np.ndarray]:
        rng = np.random.default_rng((self.seed, 10**6))
        lengths = rng.integers(self.min_len, self.max_len * self.burst_factor + 1, n)
        seqs = [rng.standard_normal(k).astype(np.float32) + rng.normal(0, 0.5) for k in lengths]
        return seqs, np.array([target(s) for s in seqs], np.float32)


def strategies(budget: int, batch_size: int) -> dict[str, Callable[[], Controller]]:
    return {
        "unbounded": Unbounded,
        "fixed_large": lambda: FixedSize(batch_size),
        "fixed_small": lambda: FixedSize(max(1, batch_size // 8)),
        "aimd": lambda: AIMD(budget),
        "pid": lambda: PIDHeadroom(budget),
        "credit": lambda: CreditBased(budget),
        "accumulate": lambda: Accumulating(CreditBased(budget)),
        "accumulate_aimd": lambda: Accumulating(AIMD(budget)),
    }


def evaluate(model: SequenceRegressor, data: tuple[list[np.ndarray], np.ndarray],
             device: torch.device) -> float:  # fmt: skip
    seqs, y = data
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(seqs), 16):
            x, pad = collate(seqs[i : i + 16], device)
            pred = model(x, pad).float().cpu().numpy()
            total += float(((pred - y[i : i + 16]) ** 2).sum())
    return total / len(seqs)


def train(
    name: str,
    controller: Controller,
    stream: Stream,
    signal: MemorySignal,
    device: torch.device,
    *,
    batches: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One strategy over the stream: the JSON line's figures and per-step traces."""
    model = SequenceRegressor().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    trainer = BudgetedTrainer(model.parameters(), optimizer, controller, signal)
    trace: dict[str, list[float]] = {"peak": [], "size": []}
    totals = {"samples": 0, "ooms": 0, "over_budget": 0, "micro_batches": 0, "steps": 0}
    peak, seconds = 0, 0.0
    count = batches or stream.batches
    # the batches come from a producer thread through the credit-based loader
    loader = BackpressuredLoader(
        (stream.batch(b % stream.batches) for b in range(count)),
        max_bytes=signal.budget_bytes or 1 << 26,
        sizeof=lambda item: sum(s.nbytes for s in item[0]) + item[1].nbytes,
    )
    for b, (seqs, y) in enumerate(loader):
        targets = torch.from_numpy(y).to(device)

        def loss_of(rows: list[int], seqs: list[np.ndarray] = seqs,
                    targets: torch.Tensor = targets) -> torch.Tensor:  # fmt: skip
            x, pad = collate([seqs[i] for i in rows], device)
            return ((model(x, pad) - targets[rows]) ** 2).mean()

        start = time.perf_counter()
        report = trainer.fit([float(len(s)) for s in seqs], loss_of)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += time.perf_counter() - start
        totals["samples"] += report.samples
        totals["ooms"] += report.ooms
        totals["over_budget"] += report.over_budget
        totals["micro_batches"] += report.micro_batches
        totals["steps"] += report.optimizer_steps
        peak = max(peak, report.peak_bytes)
        trace["peak"] += report.peaks
        trace["size"].append(report.samples / max(1, report.micro_batches))
        if on_batch is not None:
            on_batch(b)
    line = {
        "strategy": name,
        "controller": controller.describe(),
        "samples_per_s": round(totals["samples"] / seconds, 1),
        "violations": totals["ooms"] + totals["over_budget"],
        "ooms": totals["ooms"],
        "over_budget": totals["over_budget"],
        "peak_bytes": peak,
        "budget_bytes": signal.budget_bytes,
        "final_loss": round(evaluate(model, stream.held_out(), device), 6),
        "micro_batches": totals["micro_batches"],
        "optimizer_steps": totals["steps"],
        "seconds": round(seconds, 3),
    }
    stats = loader.stats
    queue = {"measure": "loader", "strategy": name, "items": stats.items,
             "max_depth": stats.max_depth, "mean_depth": round(stats.mean_depth, 2),
             "last_depth_limit": stats.depth_limits[-1] if stats.depth_limits else 0,
             "peak_bytes_in_flight": stats.peak_bytes_in_flight,
             "producer_blocked_s": round(stats.producer_blocked_s, 3),
             "consumer_wait_s": round(stats.consumer_wait_s, 3)}  # fmt: skip
    return {"line": line, "trace": trace, "loader": queue}


def measure_budget(stream: Stream, device: torch.device, factor: float) -> int:
    """``factor`` times the measured peak of one whole normal-length batch."""
    signal = memory_signal(device)
    result = train("probe", Unbounded(), Stream(**{**stream.__dict__, "batches": 1}),
                   signal, device)  # fmt: skip
    return int(result["line"]["peak_bytes"] * factor)


def host_memory(stream: Stream, budget: int, cap: int, device: torch.device,
                batches: int) -> dict[str, Any]:  # fmt: skip
    """The resident set over a long run of ``accumulate``: growth after warm-up."""
    samples: list[int] = []
    signal = memory_signal(device, budget, cap_bytes=cap)
    warm = min(stream.batches, batches // 4)

    def sample(b: int) -> None:
        if b + 1 >= warm:
            samples.append(resident_bytes()[0])

    train("accumulate", Accumulating(CreditBased(budget)), stream, signal, device,
          batches=batches, on_batch=sample)  # fmt: skip
    growth = max(samples) - samples[0]
    return {"measure": "host_memory", "strategy": "accumulate", "batches": batches,
            "rss_after_warmup": samples[0], "rss_max": max(samples), "growth_bytes": growth,
            "budget_bytes": budget, "bounded": growth <= budget}  # fmt: skip


def write_report(output: str, results: dict[str, dict[str, Any]], budget: int) -> str:
    peaks = svg.Panel(ylabel="peak MiB per micro-batch", title="Memory per step")
    sizes = svg.Panel(ylabel="samples per micro-batch", xlabel="batch")
    drawn = [n for n in ("unbounded", "aimd", "pid", "credit", "accumulate") if n in results]
    for name in drawn or list(results)[:5]:  # five colours tell five lines apart
        trace = results[name]["trace"]
        peaks.line(np.arange(len(trace["peak"])), np.array(trace["peak"]) / 2**20, label=name)
        sizes.line(np.arange(len(trace["size"])), trace["size"], label=name)
    longest = max(len(r["trace"]["peak"]) for r in results.values())
    peaks.line([0, longest], [budget / 2**20] * 2, label="budget", color="#d62728")
    name = svg.write(os.path.join(output, "backpressure.svg"), [peaks, sizes], share_x=False)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r["line"].values()) + "</tr>"
        for r in results.values()
    )
    head = "".join(f"<th>{html.escape(k)}</th>" for k in next(iter(results.values()))["line"])
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>Backpressure study</title>"
            f"</head><body><h1>Backpressure study</h1><table><tr>{head}</tr>{rows}</table>"
            f"<img src='{name}' alt='memory per step'></body></html>")  # fmt: skip
    path = os.path.join(output, "report.html")
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path


def targets(lines: dict[str, dict[str, Any]], host: dict[str, Any] | None) -> dict[str, Any]:
    base = lines["unbounded"]
    adaptive = [n for n in lines if n not in ("unbounded", "fixed_large", "fixed_small")]

    def qualifies_loss(x: dict[str, Any]) -> bool:
        return abs(x["final_loss"] - base["final_loss"]) <= LOSS_TOLERANCE * base["final_loss"]

    def qualifies(n: str) -> bool:
        x = lines[n]
        return (
            x["violations"] == 0
            and x["samples_per_s"] >= THROUGHPUT_SHARE * base["samples_per_s"]
            and qualifies_loss(x)
        )

    best = next((n for n in adaptive if qualifies(n)), None)
    shown = best or "accumulate"
    x = lines[shown]
    out = {
        "adaptive_zero_violations": {"value": x["violations"], "strategy": shown, "goal": "== 0",
                                     "met": x["violations"] == 0},
        "adaptive_throughput_share": {
            "value": round(x["samples_per_s"] / base["samples_per_s"], 3), "strategy": shown,
            "goal": f">= {THROUGHPUT_SHARE} of unbounded",
            "met": x["samples_per_s"] >= THROUGHPUT_SHARE * base["samples_per_s"]},
        "adaptive_loss_gap": {
            "value": round(abs(x["final_loss"] - base["final_loss"]) / base["final_loss"], 5),
            "strategy": shown, "goal": f"<= {LOSS_TOLERANCE} relative to unbounded",
            "met": qualifies_loss(x)},
        "unbounded_violates": {"value": base["violations"], "goal": "> 0",
                               "met": base["violations"] > 0},
        "fixed_large_violates": {"value": lines["fixed_large"]["violations"], "goal": "> 0",
                                 "met": lines["fixed_large"]["violations"] > 0},
    }  # fmt: skip
    if host is not None:
        out["host_memory_bounded"] = {"value": host["growth_bytes"],
                                      "goal": f"<= budget ({host['budget_bytes']})",
                                      "met": host["bounded"]}  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument(
        "--budget-factor",
        type=float,
        default=2.0,
        help="budget = this x the measured peak of a whole normal batch",
    )
    ap.add_argument(
        "--cap-factor", type=float, default=1.5, help="hard cap (out-of-memory) = this x the budget"
    )
    ap.add_argument(
        "--long-batches",
        type=int,
        default=300,
        help="batches of the long host-memory run (0: skip it)",
    )
    ap.add_argument("--strategies", default="", help="comma-separated subset")
    ap.add_argument("--repeat", type=int, default=3, help="tries per strategy, taking turns")
    ap.add_argument("--output", default="", help="folder for backpressure.svg and report.html")
    args = ap.parse_args(argv)  # fmt: skip
    device = resolve_device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    stream = Stream(batches=args.batches, batch_size=args.batch_size)
    budget = measure_budget(stream, device, args.budget_factor)
    cap = int(budget * args.cap_factor)
    chosen = strategies(budget, args.batch_size)
    if args.strategies:
        chosen = {k: v for k, v in chosen.items() if k in args.strategies.split(",")}

    def run(name: str) -> Callable[[], dict[str, Any]]:
        signal = memory_signal(device, budget, cap_bytes=cap)
        return lambda: train(name, chosen[name](), stream, signal, device)

    runs = take_turns({name: run(name) for name in chosen}, args.repeat)
    results = {}
    for name, tries in runs.items():
        # every try trains the same steps (no controller reads a clock): the fastest
        # one is the least disturbed by this shared machine
        results[name] = min(tries, key=lambda r: r["line"]["seconds"])
        line = {**results[name]["line"], "device": str(device), "tries": len(tries)}
        print(json.dumps(line), flush=True)
    if "accumulate" in results:
        print(json.dumps(results["accumulate"]["loader"]), flush=True)
    host = None
    if args.long_batches:
        host = host_memory(stream, budget, cap, device, args.long_batches)
        print(json.dumps(host), flush=True)
    output = args.output or tempfile.mkdtemp(prefix="sml-backpressure-")
    os.makedirs(output, exist_ok=True)
    report = write_report(output, results, budget)
    lines = {n: r["line"] for n, r in results.items()}
    if {"unbounded", "fixed_large"} <= set(lines):
        goals = targets(lines, host)
        print(json.dumps({"benchmark": "backpressure", "report": report, "targets": goals,
                          "all_met": all(t["met"] for t in goals.values())}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
