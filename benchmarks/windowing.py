"""Per-event Beam elements vs micro-batches: the same windowed count/score, one run.

Both paths read the same synthetic stream (bounded, so both run on the same
FnApiRunner), window it into 10 s fixed windows and aggregate per key and window:

- ``count``: events per key and window;
- ``score``: the same, after scoring every event with the same PyTorch MLP
  (per event: one forward per element; micro-batches: one forward per batch).

Streaming runs replay the stream on the streaming DirectRunner with a watermark every
``--watermark-interval`` seconds of event time, the same for both paths.

Both paths read the same arrival chunks, generated once before any clock starts
(``stream_chunks``), as a source would hand them over: how fast numpy generates a
synthetic stream is not what this compares. The micro-batch path reads them the way
``SyntheticSource`` does (one stamped batch per chunk when bounded, ``replay`` when
streaming); the per-event path turns each chunk into single events on the worker.

Each path runs ``--repeat`` times (2), the paths taking turns, and its fastest run
counts, both paths alike.
Prints one JSON line per measurement, then the ratios. Both paths must agree on
the aggregated event count (``agree``), in every run, or the comparison is void.

    python benchmarks/windowing.py --events 1000000 --batch-size 256
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from apache_beam.transforms import window as bw
from apache_beam.utils.timestamp import Timestamp

from benchmarks import tally
from benchmarks.common import event_stream, take_turns
from model import batch as mb
from model.artifact import ModelArtifact
from model.handler import TorchModelHandler
from model.mlp import MLPClassifier
from model.streams.synthetic import StreamChunk, SyntheticConfig, generate
from model.vocabulary import DeadLetter
from runners import patches
from runners.direct import direct_options, direct_runner, executes_test_stream_in_python
from runners.direct import run as run_pipeline
from transforms import EventTimeWindow, StreamingInference, WindowSpec, WindowStats
from transforms.io import replay, stamped

WINDOW = WindowSpec("fixed", size_s=10.0)
WATERMARK_INTERVAL_S = 2.0  # default for streaming: event time between watermarks


@functools.lru_cache(maxsize=2)
def stream_chunks(cfg: SyntheticConfig) -> tuple[StreamChunk, ...]:
    """The stream's arrival chunks, generated once per process (both local runners
    run the DoFns in this process, so the workers read them from here)."""
    return tuple(generate(cfg))


def single_events(batch: Any) -> list[bw.TimestampedValue]:
    """A micro-batch as single events: (key, features row, label), stamped."""
    keys = batch.column(mb.KEY).to_pylist()
    times = mb.event_times_us(batch).tolist()
    feats = np.array(mb.features_numpy(batch))
    labels = batch.column(mb.LABEL).to_pylist()
    return [
        bw.TimestampedValue((keys[i], feats[i], labels[i]), Timestamp(micros=times[i]))
        for i in range(batch.num_rows)
    ]


class _EventsDoFn(beam.DoFn):
    def __init__(self, cfg: SyntheticConfig) -> None:
        self._cfg = cfg

    def process(self, _: bytes) -> Iterator[bw.TimestampedValue]:
        for chunk in stream_chunks(self._cfg):
            yield from single_events(chunk.batch)


class _BatchesDoFn(beam.DoFn):
    """The chunks as micro-batches, as ``SyntheticSource`` yields them when bounded."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self._cfg = cfg

    def process(self, _: bytes) -> Iterator[bw.TimestampedValue]:
        for chunk in stream_chunks(self._cfg):
            yield stamped(chunk.batch)


def event_replay(p: beam.Pipeline, cfg: SyntheticConfig, interval_s: float) -> beam.PCollection:
    """The same chunks and watermarks as the micro-batch replay, one element per event."""
    chunks = ((single_events(c.batch), c.watermark_us) for c in stream_chunks(cfg))
    return p | "Replay" >> event_stream(chunks, interval_s)


class _ScoreEventDoFn(beam.DoFn):
    def __init__(self, artifact: ModelArtifact) -> None:
        self._artifact = artifact

    def setup(self) -> None:
        self._handler = TorchModelHandler(self._artifact, "cpu")

    def process(self, event: tuple[str, np.ndarray, int]) -> Iterator[tuple[str, float]]:
        key, feats, _ = event
        _, score = self._handler.predict(torch.from_numpy(feats).unsqueeze(0))
        yield key, float(score[0])


class _Total(beam.DoFn):
    """Adds up the events in the aggregated rows, whatever their shape.

    A process-wide tally (both local runners run the DoFns in this process); Beam
    counters are not usable on the legacy streaming DirectRunner.
    """

    def process(self, row: Any) -> Iterator[None]:
        if isinstance(row, pa.RecordBatch):  # window statistics: a batch of rows
            count = pc.sum(row.column("events")).as_py() or 0
        else:  # (key, count) or (key, (count, sum)) per event-level aggregation
            value = row[1]
            count = value[0] if isinstance(value, tuple) else value
        tally.add("events", int(count))
        return iter(())


def _sum_pairs(values: Any) -> tuple[int, float]:
    n, s = 0, 0.0
    for c, v in values:
        n, s = n + c, s + v
    return n, s


def per_event(
    p: beam.Pipeline, cfg: SyntheticConfig, artifact: ModelArtifact, scored: bool, interval: Any
) -> None:
    """``interval``: streaming with watermarks this many seconds apart; None: bounded."""
    if interval is not None:
        source = event_replay(p, cfg, interval)
    else:
        source = p | "Impulse" >> beam.Impulse() | "Events" >> beam.ParDo(_EventsDoFn(cfg))
    events = source | "Window" >> beam.WindowInto(WINDOW.window_fn())
    if scored:
        pairs = events | "Score" >> beam.ParDo(_ScoreEventDoFn(artifact))
        agg = (
            pairs
            | "Pair" >> beam.Map(lambda kv: (kv[0], (1, kv[1])))
            | "Sum" >> beam.CombinePerKey(_sum_pairs)
        )
    else:
        agg = events | "Key" >> beam.Map(lambda e: (e[0], 1)) | "Count" >> beam.CombinePerKey(sum)
    _ = agg | "Total" >> beam.ParDo(_Total())


def micro_batch(
    p: beam.Pipeline, cfg: SyntheticConfig, artifact: ModelArtifact, scored: bool, interval: Any
) -> None:
    if interval is not None:
        items = ((c.batch, c.watermark_us, list[DeadLetter]()) for c in stream_chunks(cfg))
        batches = replay(
            p,
            items,
            python_test_stream=executes_test_stream_in_python(p.runner),
            watermark_interval_s=interval,
            label="Source",
        ).batches
    else:
        batches = (
            p
            | "Impulse" >> beam.Impulse()
            | "Source" >> beam.ParDo(_BatchesDoFn(cfg)).with_output_types(pa.RecordBatch)
        )
    windowed = (batches | "Window" >> EventTimeWindow(WINDOW)).batches
    if scored:
        windowed = windowed | "Score" >> StreamingInference(artifact, device="cpu")
    rows = windowed | "Stats" >> WindowStats()
    _ = rows | "Total" >> beam.ParDo(_Total())


def measure(
    build: Any, cfg: SyntheticConfig, artifact: ModelArtifact, scored: bool, interval: Any
) -> tuple[float, int]:
    """Seconds from graph construction to the end of the run, and events aggregated."""
    tally.take("events")
    start = time.perf_counter()
    streaming = interval is not None
    options = direct_options(streaming=streaming)
    p = beam.Pipeline(runner=direct_runner(streaming=streaming), options=options)
    build(p, cfg, artifact, scored, interval)
    run_pipeline(p).wait_until_finish()
    return time.perf_counter() - start, tally.take("events")


def main(argv: list[str] | None = None) -> int:
    patches.apply()  # our documented speed-ups of the local runners (runners/patches)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second of event time")
    ap.add_argument("--pipelines", default="count,score")
    ap.add_argument("--modes", default="bounded,streaming", help="bounded, streaming or both")
    ap.add_argument(
        "--streaming-events",
        type=int,
        default=100_000,
        help="events for the streaming runs (0 skips them): the reference streaming "
        "runner is slow per element, so they use a shorter stream",
    )
    ap.add_argument(
        "--watermark-interval",
        type=float,
        default=WATERMARK_INTERVAL_S,
        help="streaming: seconds of event time between watermarks, both paths",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs of each path and pipeline: the fastest counts (a shared machine's "
        "noise only ever slows a run down)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = SyntheticConfig(
        num_events=args.events,
        chunk_events=args.batch_size,
        events_per_second=args.rate,
        late_fraction=0.0,
    )
    artifact = ModelArtifact.from_module(MLPClassifier(cfg.num_features, seed=0), version=0)
    chosen = args.modes.split(",")
    modes = [("bounded", cfg)] if "bounded" in chosen else []
    if args.streaming_events and "streaming" in chosen:
        modes.append(("streaming", dataclasses.replace(cfg, num_events=args.streaming_events)))
    ok = True
    for mode, mode_cfg in modes:
        stream_chunks(mode_cfg)  # before any clock starts
        for name in args.pipelines.split(","):
            interval = args.watermark_interval if mode == "streaming" else None
            ok &= compare(mode, mode_cfg, name, artifact, interval, args.repeat)
    return 0 if ok else 1


def compare(
    mode: str,
    cfg: SyntheticConfig,
    name: str,
    artifact: ModelArtifact,
    interval: Any,
    repeat: int = 1,
) -> bool:
    """Run both paths ``repeat`` times each, taking turns (a slow spell of the machine
    slows both alike; the fastest run counts); print one line each and one with the
    ratio; True if they agree."""
    paths = {"per_event": per_event, "micro_batch": micro_batch}
    measured = take_turns(
        {
            path: functools.partial(measure, build, cfg, artifact, name == "score", interval)
            for path, build in paths.items()
        },
        repeat,
    )
    rates, totals = {}, {}
    for path, runs in measured.items():
        seconds, total = min(runs)
        if len({t for _, t in runs}) != 1:
            total = -1  # the runs disagree: void
        rates[path], totals[path] = cfg.num_events / seconds, total
        print(
            json.dumps(
                {
                    "benchmark": "windowing",
                    "mode": mode,
                    "pipeline": name,
                    "path": path,
                    "events": cfg.num_events,
                    "batch_size": cfg.chunk_events,
                    "seconds": round(seconds, 3),  # the fastest of "runs"
                    "runs": repeat,
                    "events_per_s": round(rates[path]),
                    "aggregated_events": total,
                }
            ),
            flush=True,
        )
    agree = totals["per_event"] == totals["micro_batch"] == cfg.num_events
    print(
        json.dumps(
            {
                "benchmark": "windowing",
                "mode": mode,
                "pipeline": name,
                "ratio_micro_vs_per_event": round(rates["micro_batch"] / rates["per_event"], 1),
                "target": 30,
                "agree": agree,
            }
        ),
        flush=True,
    )
    return agree


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main())
