"""What the benchmarks share: taking turns between the sides they compare, the
per-event replay of a stream's chunks, River's test-then-train loop, and a run of
the command line's pipeline."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from transforms.io.replay import WatermarkPacer

T = TypeVar("T")


def take_turns(runs: Mapping[str, Callable[[], T]], repeat: int) -> dict[str, list[T]]:
    """Each run ``repeat`` times, the sides taking turns (a, b, a, b, ...), so that a
    slow spell of this shared machine slows every side alike; the caller picks the
    fastest (noise only ever slows a run down) or the median of each."""
    results: dict[str, list[T]] = {label: [] for label in runs}
    for _ in range(repeat):
        for label, run in runs.items():
            results[label].append(run())
    return results


def event_stream(chunks: Iterable[tuple[list[Any], int]], interval_s: float) -> TestStream:
    """Single events (``TimestampedValue``s), chunk by chunk, with the micro-batch
    replay's steps: after the same chunks, the watermark by the same rule
    (:class:`transforms.io.WatermarkPacer`). ``chunks``: each chunk's events and
    the source's watermark after it."""
    stream, arrived = TestStream(), []
    pacer = WatermarkPacer(round(interval_s * 1e6))
    for events, watermark_us in chunks:
        arrived += events
        emit = pacer.due(watermark_us)
        if emit is not None:
            stream = stream.add_elements(arrived).advance_watermark_to(Timestamp(micros=emit))
            arrived = []
    if arrived:
        stream = stream.add_elements(arrived)
    return stream.advance_watermark_to_infinity()


def prequential(model: Any, rows: Sequence[dict[str, float]], labels: Sequence[int]) -> dict:
    """A River model test-then-train on ``rows``: accuracy and seconds of the loop."""
    correct = 0
    start = time.perf_counter()
    for features, label in zip(rows, labels, strict=True):
        correct += int(model.predict_one(features) == label)
        model.learn_one(features, label)
    return {"accuracy": correct / len(labels), "seconds": time.perf_counter() - start}


def run_command_line(argv: list[str]) -> tuple[Any, Any, float]:
    """``pipelines/main.py ARGV`` through ``main.run`` into a fresh output folder:
    its config, summary and wall seconds."""
    from pipelines import main as cli
    from pipelines.cli import config_from_args, parse_args

    out = tempfile.mkdtemp(prefix="sml-bench-")
    cfg = config_from_args(parse_args([*argv, "--output", out, "--quiet"]))
    start = time.perf_counter()
    summary = cli.run(cfg, show_progress=False)
    return cfg, summary, time.perf_counter() - start
