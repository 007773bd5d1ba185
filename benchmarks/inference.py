"""Beam RunInference vs our streaming inference vs a bare torch loop, one run.

Same stream (the synthetic generator, 8 features), same runner (our DirectRunner
set-up: FnApiRunner for ``batch``, the streaming DirectRunner for ``streaming``):

- ``beam_runinference``: ``RunInference(PytorchModelHandlerTensor)`` fed one tensor per
  event, as users do (Beam batches them with BatchElements);
- ``ours``: :class:`transforms.inference.streaming.StreamingInference` on micro-batches;
- ``torch_loop``: the same micro-batches through the model in a plain loop, no Beam
  (the limit).

In streaming mode both replays emit the watermark every ``--watermark-interval``
seconds of event time (a live source's periodic watermark), by the same rule and after
the same chunks (:class:`transforms.io.WatermarkPacer`); what arrives in between
is one TestStream step, so one bundle, for Beam's per-event input as for ours.

Models: the tiny MLP and a small Transformer encoder. Each measurement runs in its
own process, so the peak RSS it reports is its own. The per-event reference is slow,
so in batch mode it scores a prefix of the stream (``--reference-events``); rates are per
event. In streaming mode every variant sees the same 100k events.

    python benchmarks/inference.py
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

MODES = ("batch", "streaming")
MODELS = ("mlp", "transformer")
VARIANTS = ("beam_runinference", "ours", "ours_adaptive", "torch_loop")


def _config(events: int, batch_size: int) -> Any:
    from model.streams.synthetic import SyntheticConfig

    return SyntheticConfig(
        num_events=events, chunk_events=batch_size, events_per_second=1000.0, late_fraction=0.0
    )


def _model(name: str) -> tuple[Any, dict[str, Any]]:
    from model.mlp import MLPClassifier
    from model.transformer import TinyTransformerClassifier

    if name == "mlp":
        params: dict[str, Any] = {"in_features": 8, "hidden": (32,), "num_classes": 2}
        return MLPClassifier, params
    return TinyTransformerClassifier, {"in_features": 8}


def _chunks_as_tensors(cfg: Any, limit: int) -> Iterator[tuple[list[Any], int]]:
    """Per chunk of the stream: each event as a tensor stamped with its event time,
    and the source's watermark after the chunk; the first ``limit`` events."""
    import numpy as np
    import torch
    from apache_beam.transforms import window as bw
    from apache_beam.utils.timestamp import Timestamp

    from model import batch as mb
    from model.streams.synthetic import generate

    seen = 0
    for chunk in generate(cfg):
        if seen == limit:
            return
        take = min(chunk.batch.num_rows, limit - seen)
        feats = np.array(mb.features_numpy(chunk.batch))[:take]
        times = mb.event_times_us(chunk.batch)[:take].tolist()
        events = [
            bw.TimestampedValue(torch.from_numpy(f), Timestamp(micros=t))
            for f, t in zip(feats, times, strict=True)
        ]
        yield events, chunk.watermark_us
        seen += take


def run_variant(
    variant: str,
    model_name: str,
    mode: str,
    events: int,
    batch_size: int,
    watermark_interval_s: float = 0.0,
) -> dict[str, Any]:
    import apache_beam as beam
    import torch
    from apache_beam.ml.inference.base import RunInference
    from apache_beam.ml.inference.pytorch_inference import PytorchModelHandlerTensor

    from benchmarks import tally
    from benchmarks.common import event_stream
    from model import batch as mb
    from model.artifact import ModelArtifact
    from model.batching import AdaptiveBatchSize
    from model.streams.synthetic import generate
    from runners.direct import direct_options, direct_runner, executes_test_stream_in_python
    from runners.direct import run as run_pipeline
    from transforms import StreamingInference, SyntheticSource

    model_class, params = _model(model_name)
    torch.manual_seed(0)
    net = model_class(**params).eval()
    streaming = mode == "streaming"
    cfg = _config(events, batch_size)
    start = time.perf_counter()
    if variant == "torch_loop":
        rows = 0
        with torch.inference_mode():
            for chunk in generate(cfg):
                x = mb.features_tensor(chunk.batch)
                conf, pred = torch.softmax(net(x), dim=1).max(dim=1)
                rows += len(pred.numpy())
        seconds = time.perf_counter() - start
    else:
        p = beam.Pipeline(
            runner=direct_runner(streaming=streaming), options=direct_options(streaming=streaming)
        )
        if variant.startswith("ours"):
            factory = _Factory(model_name)
            artifact = ModelArtifact.from_module(net, 0, factory=factory)
            # "ours": forward passes of exactly batch_size rows, like the loop;
            # "ours_adaptive": the AIMD controller's default (grows while under 50 ms).
            fixed = AdaptiveBatchSize(initial=batch_size, max_size=batch_size, min_size=1)
            batching = None if variant == "ours_adaptive" else fixed
            source = SyntheticSource(
                cfg,
                streaming=streaming,
                python_test_stream=executes_test_stream_in_python(p.runner),
                watermark_interval_s=watermark_interval_s,
            )
            scored = (p | source).batches | StreamingInference(
                artifact, device="cpu", batching=batching
            )
            _ = scored | beam.Map(lambda b: tally.add("rows", b.num_rows))
        else:
            path = os.path.join(tempfile.mkdtemp(), "model.pt")
            torch.save(net.state_dict(), path)
            handler = PytorchModelHandlerTensor(
                state_dict_path=path, model_class=model_class, model_params=params, device="CPU"
            )
            chunks = _chunks_as_tensors(cfg, events)
            if streaming:  # the micro-batch replay's steps: its chunks, its watermark rule
                source = p | event_stream(chunks, watermark_interval_s)
            else:
                source = p | beam.Create([e.value for chunk, _ in chunks for e in chunk])
            _ = source | RunInference(handler) | beam.Map(lambda r: tally.add("rows", 1))
        tally.take("rows")
        run_pipeline(p).wait_until_finish()
        seconds = time.perf_counter() - start
        rows = tally.take("rows")
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "benchmark": "inference",
        "model": model_name,
        "mode": mode,
        "variant": variant,
        "events": events,
        "rows_out": rows,
        "batch_size": batch_size,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds),
        "peak_rss_mib": round(peak_kib / 1024),
    }


class _Factory:
    """Picklable model factory for the artifact."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self) -> Any:
        model_class, params = _model(self.name)
        return model_class(**params)


def main(argv: list[str] | None = None) -> int:
    from runners import patches

    patches.apply()  # our documented speed-ups of the local runners (runners/patches)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000, help="batch: ours and the loop")
    ap.add_argument("--reference-events", type=int, default=10_000, help="batch: RunInference")
    ap.add_argument("--streaming-events", type=int, default=100_000, help="streaming: ours, loop")
    ap.add_argument(
        "--reference-streaming-events", type=int, default=100_000, help="streaming: RunInference"
    )
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument(
        "--watermark-interval",
        type=float,
        default=2.0,
        help="streaming: seconds of event time between watermarks (0: after every batch)",
    )
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.variant:  # child process: one measurement
        print(
            json.dumps(
                run_variant(
                    args.variant,
                    args.model,
                    args.mode,
                    args.events,
                    args.batch_size,
                    args.watermark_interval,
                )
            )
        )
        return 0
    ok = True
    for mode in args.modes.split(","):
        for model_name in args.models.split(","):
            results = {}
            for variant in VARIANTS:
                reference = variant == "beam_runinference"
                if mode == "streaming":
                    n = args.reference_streaming_events if reference else args.streaming_events
                else:
                    n = args.reference_events if reference else args.events
                line = _child(
                    variant, model_name, mode, n, args.batch_size, args.watermark_interval
                )
                print(json.dumps(line), flush=True)
                results[variant] = line
                ok &= line["rows_out"] == line["events"]
            rate = {v: results[v]["events_per_s"] for v in VARIANTS}
            summary = {
                "benchmark": "inference",
                "model": model_name,
                "mode": mode,
                "ours_vs_runinference": round(rate["ours"] / rate["beam_runinference"], 1),
                "ours_vs_torch_loop": round(rate["ours"] / rate["torch_loop"], 3),
                "ours_adaptive_vs_torch_loop": round(rate["ours_adaptive"] / rate["torch_loop"], 3),
                "targets": {
                    "ours_vs_runinference (mlp)": 50,
                    "ours_vs_torch_loop (transformer)": 0.7,
                },
            }
            print(json.dumps(summary), flush=True)
    return 0 if ok else 1


def _child(
    variant: str, model: str, mode: str, events: int, batch_size: int, interval_s: float
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--variant",
        variant,
        "--model",
        model,
        "--mode",
        mode,
        "--events",
        str(events),
        "--batch-size",
        str(batch_size),
        "--watermark-interval",
        str(interval_s),
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())
