"""Command line: run a streaming ML pipeline end to end and print a summary.

    python pipelines/main.py --runner DirectRunner

runs the default: the synthetic drifting stream, replayed in streaming mode with
out-of-order and late events, 10 s event-time windows with early, on-time and late
panes, and the classify pipeline: a PyTorch MLP that learns from the stream while it
scores it, its new versions reaching the scorer in the same run. Outputs land under
``--output``.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
import time
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.runners.runner import PipelineRunner

from model.learner import LearnerConfig
from pipelines import classify, score
from pipelines.config import PIPELINES, PipelineConfig
from pipelines.summary import RunSummary, counters
from runners.direct import direct_options, direct_runner
from transforms.online import OnlineConfig
from transforms.synthetic import SyntheticConfig
from transforms.windowing import TriggerSpec, WindowSpec

BUILDERS = {"classify": classify.build, "score": score.build}

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    pipelines = "; ".join(f"{name}: {text}" for name, text in PIPELINES.items())
    p = argparse.ArgumentParser(
        prog="pipelines/main.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=f"pipelines -- {pipelines}",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--runner",
        default="DirectRunner",
        help="Beam runner: DirectRunner (local; streaming on the reference streaming "
        "runner, bounded on the portable in-process runner) or any other Beam runner "
        "name, passed to Beam as is",
    )
    run.add_argument(
        "--pipeline", default="classify", choices=sorted(PIPELINES), help="which pipeline to run"
    )
    run.add_argument("--output", default="output", help="directory for all outputs")
    run.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="streaming mode: an unbounded replay with watermarks, so early/late panes "
        "and late data happen; --no-streaming runs a bounded batch job",
    )
    run.add_argument(
        "--device", default="auto", help="torch device for scoring: auto, cpu, cuda, cuda:N"
    )
    run.add_argument("--seed", type=int, default=0, help="seed for data and model")
    run.add_argument("--json", action="store_true", help="also print the summary as JSON")

    src = p.add_argument_group("source")
    src.add_argument(
        "--source",
        default="synthetic",
        choices=["synthetic", "csv", "nab"],
        help="synthetic drifting stream, a generic CSV file, or NAB 'timestamp,value' files",
    )
    src.add_argument(
        "--input",
        action="append",
        default=[],
        help="input file or glob (repeatable) for --source csv/nab",
    )
    src.add_argument("--label-column", default=None, help="generic CSV: integer class label column")
    src.add_argument("--time-column", default="timestamp", help="generic CSV: event time column")
    src.add_argument(
        "--watermark-lag",
        type=float,
        default=0.0,
        help="CSV streaming: seconds the watermark trails the newest event time",
    )
    src.add_argument("--events", type=int, default=20_000, help="synthetic: number of events")
    src.add_argument("--keys", type=int, default=8, help="synthetic: number of keys")
    src.add_argument("--rate", type=float, default=100.0, help="synthetic: events per second")
    src.add_argument(
        "--batch-size", type=int, default=256, help="synthetic: events per arriving micro-batch"
    )
    src.add_argument(
        "--late-fraction", type=float, default=0.01, help="synthetic: share of late events"
    )

    win = p.add_argument_group("windows and triggers")
    win.add_argument("--window", default="fixed", choices=["fixed", "sliding", "session", "global"])
    win.add_argument("--window-size", type=float, default=10.0, help="seconds")
    win.add_argument("--window-period", type=float, default=None, help="sliding: seconds")
    win.add_argument("--session-gap", type=float, default=10.0, help="session: seconds")
    win.add_argument(
        "--allowed-lateness",
        type=float,
        default=30.0,
        help="seconds after the window end during which late data is still accepted",
    )
    win.add_argument(
        "--early-count",
        type=int,
        default=4,
        help="early pane every N elements (micro-batch pieces); 0 disables",
    )
    win.add_argument(
        "--early-after",
        type=float,
        default=None,
        help="early pane N whole seconds of processing time after a pane's first element "
        "(the streaming replay advances processing time by each batch's event-time span)",
    )
    win.add_argument("--late-count", type=int, default=1, help="late pane every N late elements")

    learn = p.add_argument_group("online learning (classify)")
    learn.add_argument(
        "--mode",
        default="decoupled",
        choices=["decoupled", "coupled"],
        help="decoupled: a trainer publishes a version per window and the scorer reads "
        "them as a side input (window k+1 scored by the model trained through k); "
        "coupled: one step per model predicts each batch, then learns from it",
    )
    learn.add_argument("--per-key", action="store_true", help="one model per key (coupled)")
    learn.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    learn.add_argument("--lr", type=float, default=0.01, help="learning rate")
    learn.add_argument("--replay-size", type=int, default=0, help="reservoir replay rows")
    learn.add_argument("--ewc-lambda", type=float, default=0.0, help="online EWC strength")
    learn.add_argument(
        "--emit-every", type=int, default=None, help="also publish a version every N samples"
    )
    win.add_argument(
        "--accumulating",
        action="store_true",
        help="panes accumulate (default: discarding, each pane has only new data)",
    )
    return p


def _expand_inputs(patterns: Sequence[str]) -> tuple[str, ...]:
    paths: list[str] = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if not found:
            msg = f"--input {pattern!r} matches no file"
            raise ValueError(msg)
        paths.extend(found)
    return tuple(paths)


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """Validated pipeline config; ``ValueError`` names the bad option."""
    synthetic = SyntheticConfig(
        num_events=args.events,
        num_keys=args.keys,
        events_per_second=args.rate,
        chunk_events=args.batch_size,
        late_fraction=args.late_fraction,
        seed=args.seed,
    )
    window = WindowSpec(
        kind=args.window,
        size_s=args.window_size,
        period_s=args.window_period,
        gap_s=args.session_gap,
    )
    trigger = TriggerSpec(
        early_count=args.early_count or None,
        early_after_s=args.early_after,
        late_count=args.late_count,
        allowed_lateness_s=args.allowed_lateness,
        accumulating=args.accumulating,
    )
    online = OnlineConfig(
        mode=args.mode,
        window_s=args.window_size,
        per_key=args.per_key,
        emit_every_samples=args.emit_every,
        # Coupled mode scores late batches with their own window's model: keep enough.
        history_windows=math.ceil(args.allowed_lateness / args.window_size) + 2,
        learner=LearnerConfig(
            optimizer=args.optimizer,
            lr=args.lr,
            replay_size=args.replay_size,
            ewc_lambda=args.ewc_lambda,
            seed=args.seed,
        ),
    )
    return PipelineConfig(
        output=args.output,
        pipeline=args.pipeline,
        source=args.source,
        inputs=_expand_inputs(args.input),
        label_column=args.label_column,
        time_column=args.time_column,
        synthetic=synthetic,
        window=window,
        trigger=trigger,
        online=online,
        streaming=args.streaming,
        watermark_lag_s=args.watermark_lag,
        processing_time_per_chunk_s=(
            args.batch_size / args.rate if args.early_after and args.streaming else None
        ),
        device=args.device,
        seed=args.seed,
    )


def run(cfg: PipelineConfig, runner: str = "DirectRunner") -> RunSummary:
    """Build and run the pipeline; wait for it; return the summary."""
    beam_runner: PipelineRunner | str
    if runner == "DirectRunner":
        beam_runner = direct_runner(streaming=cfg.streaming)
        options = direct_options(streaming=cfg.streaming)
    else:
        beam_runner = runner
        options = direct_options(streaming=cfg.streaming, extra=[f"--runner={runner}"])
    os.makedirs(cfg.output, exist_ok=True)
    start = time.perf_counter()
    pipeline = beam.Pipeline(runner=beam_runner, options=options)
    outputs = BUILDERS[cfg.pipeline](pipeline, cfg)
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - start
    events_in = outputs.source_events
    if events_in is None:
        events_in = counters(result)["events_in"]
    return RunSummary.from_outputs(
        cfg.output, events_in=events_in, seconds=seconds, accumulating=cfg.trigger.accumulating
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ValueError as err:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    summary = run(cfg, args.runner)
    print(f"pipeline {args.pipeline} on {args.runner} -> {os.path.abspath(cfg.output)}")
    for line in summary.lines():
        print("  " + line)
    if args.json:
        print(summary.to_json())
    return 0 if summary.balanced else 1


if __name__ == "__main__":
    sys.exit(main())
