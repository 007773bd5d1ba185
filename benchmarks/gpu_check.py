"""One short, prepared check of the CUDA code paths, for when a GPU machine is lent.

Prints one JSON line per check and exits non-zero if any check fails:

- ``handler``: the MLP and the Transformer scored through ``TorchModelHandler`` on the
  device (pinned staging buffer, non-blocking copies), events/s beside the CPU, and
  the same predictions as on the CPU;
- ``oom``: a model that really runs out of device memory above a batch size: the
  handler splits, retries, lowers its ceiling and loses no row (CUDA only);
- ``learner``: the incremental learner training on the device (autograd path), its
  accuracy and samples/s, and a snapshot restored into a fresh learner;
- ``pipeline``: ``StreamingInference`` on the device inside a bounded Beam pipeline,
  rows in = rows out;
- ``backpressure``: every memory controller of :mod:`model.backpressure` trains the
  backpressure study's Transformer on a short bursty stream on the device, measured
  by the device's :class:`model.memory.MemorySignal` under a budget and a hard cap:
  samples/s, violations, peak bytes; the accumulating credit strategy must stay
  within the budget and learn what the unbounded one learns.

    python benchmarks/gpu_check.py              # --device cuda
    python benchmarks/gpu_check.py --device cpu # the same script on the CPU (CI smoke)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from model.artifact import ModelArtifact
from model.batching import AdaptiveBatchSize
from model.device import resolve_device
from model.handler import TorchModelHandler
from model.learn.learner import IncrementalLearner, LearnerConfig, dumps_state, loads_state
from model.memory import memory_signal
from model.mlp import MLPClassifier
from model.transformer import TinyTransformerClassifier
from runners import patches


def _emit(line: dict[str, Any]) -> bool:
    print(json.dumps(line), flush=True)
    return bool(line["ok"])


def check_handler(device: str, rows: int) -> bool:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((rows, 8), dtype=np.float32))
    ok = True
    for name, factory in (
        ("mlp", lambda: MLPClassifier(8, (32,), 2, seed=0)),
        ("transformer", lambda: TinyTransformerClassifier(8, seed=0)),
    ):
        artifact = ModelArtifact.from_module(factory(), 1, factory=factory)
        rates, preds = {}, {}
        for dev in ("cpu", device):
            handler = TorchModelHandler(
                artifact, dev, batching=AdaptiveBatchSize(initial=256, max_size=256)
            )
            handler.predict(x[:512])  # warm-up (CUDA context, kernels)
            if handler.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            preds[dev] = handler.predict(x)
            rates[dev] = rows / (time.perf_counter() - start)
        same = float((preds["cpu"][0] == preds[device][0]).mean())
        close = bool(np.allclose(preds["cpu"][1], preds[device][1], atol=1e-3))
        ok &= _emit(
            {
                "check": "handler",
                "model": name,
                "device": device,
                "events_per_s": round(rates[device]),
                "cpu_events_per_s": round(rates["cpu"]),
                "same_predictions": same,
                "ok": same > 0.999 and close,
            }
        )
    return ok


class _Hungry(nn.Module):
    """Allocates ``per_row_bytes`` of device memory per row: a real OOM above a size."""

    def __init__(self, per_row_bytes: int) -> None:
        super().__init__()
        self.per_row = per_row_bytes
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scratch = torch.empty((x.shape[0], self.per_row // 4), device=x.device)
        return self.head(x) + scratch[:, :1] * 0


def check_oom(device: str) -> bool:
    dev = resolve_device(device)
    if dev.type != "cuda":
        return _emit({"check": "oom", "device": device, "skipped": "CUDA only", "ok": True})
    free, _ = torch.cuda.mem_get_info(dev)
    per_row = max(free // 48, 1 << 20)  # about 48 rows fit
    handler = TorchModelHandler(
        ModelArtifact.from_factory(lambda: _Hungry(per_row), 1),
        device,
        batching=AdaptiveBatchSize(initial=256, max_size=256),
    )
    x = torch.randn(1000, 8)
    pred, _ = handler.predict(x)
    ok = len(pred) == len(x) and handler.stats.oom_splits > 0 and handler.batching.ceiling < 256
    return _emit(
        {
            "check": "oom",
            "device": device,
            "rows_in": len(x),
            "rows_out": len(pred),
            "oom_splits": handler.stats.oom_splits,
            "batch_ceiling_after": handler.batching.ceiling,
            "ok": ok,
        }
    )


def check_learner(device: str, rows: int) -> bool:
    rng = np.random.default_rng(1)
    w = rng.standard_normal(8)
    cfg = LearnerConfig(device=device, kernel="autograd", lr=0.01, standardize=True, seed=0)
    learner = IncrementalLearner(MLPClassifier(8, (64,), 2, seed=0), cfg)
    x = rng.standard_normal((rows, 8)).astype(np.float32)
    y = (x @ w > 0).astype(np.int64)
    correct = np.empty(rows, dtype=bool)
    start = time.perf_counter()
    for i in range(0, rows, 256):
        pred, _, _ = learner.predict_learn(x[i : i + 256], y[i : i + 256])
        correct[i : i + 256] = pred == y[i : i + 256]
    seconds = time.perf_counter() - start
    restored = IncrementalLearner(MLPClassifier(8, (64,), 2, seed=1), cfg)
    restored.restore(loads_state(dumps_state(learner.snapshot())))
    same = bool((restored.predict(x[:2000])[0] == learner.predict(x[:2000])[0]).all())
    accuracy = float(correct[rows // 2 :].mean())  # once the concept is learned
    return _emit(
        {
            "check": "learner",
            "device": str(learner.device),
            "prequential_accuracy_second_half": round(accuracy, 4),
            "samples_per_s": round(rows / seconds),
            "restored_same_predictions": same,
            "ok": accuracy > 0.9 and same,
        }
    )


def check_pipeline(device: str, events: int) -> bool:
    import apache_beam as beam

    from benchmarks import tally
    from model.streams.synthetic import SyntheticConfig
    from runners.direct import direct_options, direct_runner
    from runners.direct import run as run_pipeline
    from transforms import StreamingInference, SyntheticSource

    cfg = SyntheticConfig(num_events=events, chunk_events=256, late_fraction=0.0)
    factory = _MLP8()
    artifact = ModelArtifact.from_module(factory(), 0, factory=factory)
    tally.take("rows")
    p = beam.Pipeline(
        runner=direct_runner(streaming=False), options=direct_options(streaming=False)
    )
    scored = (p | SyntheticSource(cfg)).batches | StreamingInference(artifact, device=device)
    _ = scored | beam.Map(lambda b: tally.add("rows", b.num_rows))
    start = time.perf_counter()
    run_pipeline(p).wait_until_finish()
    seconds = time.perf_counter() - start
    rows = tally.take("rows")
    return _emit(
        {
            "check": "pipeline",
            "device": device,
            "events": events,
            "rows_out": rows,
            "events_per_s": round(events / seconds),
            "ok": rows == events,
        }
    )


def check_backpressure(device: str) -> bool:
    from benchmarks import backpressure as study

    dev = resolve_device(device)
    stream = study.Stream(batches=12, burst_every=6, burst_length=2)
    budget = study.measure_budget(stream, dev, 2.0)
    cap = int(budget * 1.5)
    lines = {}
    for name, make in study.strategies(budget, stream.batch_size).items():
        signal = memory_signal(dev, budget, cap_bytes=cap)
        lines[name] = study.train(name, make(), stream, signal, dev)["line"]
        _emit({"check": "backpressure", "device": device, "signal": type(signal).__name__,
               **lines[name], "ok": True})  # fmt: skip
    ref, acc = lines["unbounded"], lines["accumulate"]
    ok = acc["violations"] == 0 and abs(acc["final_loss"] - ref["final_loss"]) <= 1e-3 * max(
        ref["final_loss"], 1e-6
    )
    return _emit({"check": "backpressure", "device": device, "strategies": len(lines),
                  "accumulate_violations": acc["violations"],
                  "unbounded_violations": ref["violations"], "ok": ok})  # fmt: skip


class _MLP8:
    """Picklable factory of the pipeline check's model."""

    def __call__(self) -> nn.Module:
        return MLPClassifier(8, (32,), 2, seed=0)


def main(argv: list[str] | None = None) -> int:
    patches.apply()  # our documented speed-ups of the local runners (runners/patches)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=200_000)
    args = ap.parse_args(argv)
    try:
        resolve_device(args.device)
    except ValueError as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    ok = check_handler(args.device, args.rows)
    ok &= check_oom(args.device)
    ok &= check_learner(args.device, min(args.rows, 100_000))
    ok &= check_pipeline(args.device, min(args.rows, 50_000))
    ok &= check_backpressure(args.device)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
