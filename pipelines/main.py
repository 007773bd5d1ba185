"""Command line: run a streaming ML pipeline end to end and print a summary.

    python pipelines/main.py --runner DirectRunner

Options and config files: :mod:`pipelines.cli`. Exit codes: 0 done and every input
event accounted for; 1 done but the counts do not add up; 2 bad usage (an option, its
value or the config file); 3 bad input (a file that cannot be read at all; bad rows
never fail a run, they are dead-lettered); 4 the pipeline failed while running.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import time
import uuid
from collections.abc import Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineRunner

from model.live import BOARD
from model.streams.topics import TopicError
from model.vocabulary import Metric
from pipelines import (
    anomaly,
    classify,
    federated,
    output_dir,
    progress,
    recommend,
    report,
    score,
)
from pipelines.cli import (
    BadInputError,
    UsageError,
    config_from_args,
    flink_from_args,
    parse_args,
)
from pipelines.config import PipelineConfig, csv_format, input_features
from pipelines.serve import LiveServer
from pipelines.summary import RunSummary, counters, federated_metrics, memory_figures
from runners import patches
from runners.direct import direct_options, direct_runner
from runners.direct import run as direct_run
from runners.flink import FlinkSettings, FlinkUnavailable, flink_args, job_args
from runners.flink.rest import JobWatch
from runners.heap import frozen_heap
from runners.prism import PrismUnavailable, prism_args

BUILDERS = {
    "anomaly": anomaly.build,
    "classify": classify.build,
    "federated": federated.build,
    "recommend": recommend.build,
    "score": score.build,
}
EXIT_OK, EXIT_MISMATCH, EXIT_USAGE, EXIT_BAD_INPUT, EXIT_RUNTIME = 0, 1, 2, 3, 4


def runner_options(
    cfg: PipelineConfig,
    runner: str,
    *,
    flink: FlinkSettings | None = None,
    job_endpoint: str = "embed",
) -> tuple[PipelineRunner | str, PipelineOptions]:
    """The Beam runner and pipeline options for ``runner`` (see :func:`run`)."""
    beam_runner: PipelineRunner | str
    if runner == "DirectRunner":
        beam_runner = direct_runner(streaming=cfg.streaming)
        options = direct_options(streaming=cfg.streaming)
    elif runner == "FlinkRunner":
        beam_runner = runner
        extra = flink_args(flink or FlinkSettings())
        options = direct_options(streaming=cfg.streaming, extra=extra)
    elif runner == "PrismRunner":
        beam_runner = runner
        options = direct_options(streaming=cfg.streaming, extra=prism_args())
    elif runner == "PortableRunner":
        beam_runner = runner
        extra = [
            "--runner=PortableRunner",
            f"--job_endpoint={job_endpoint}",
            *job_args(flink or FlinkSettings()),
        ]
        options = direct_options(streaming=cfg.streaming, extra=extra)
    else:
        beam_runner = runner
        options = direct_options(streaming=cfg.streaming, extra=[f"--runner={runner}"])
    return beam_runner, options


def start_run(pipeline: beam.Pipeline, runner: str) -> PipelineResult:
    """Start the pipeline: DirectRunner runs skip Beam's pickling round trip."""
    return direct_run(pipeline) if runner == "DirectRunner" else pipeline.run()


def run(
    cfg: PipelineConfig,
    runner: str = "DirectRunner",
    *,
    show_progress: bool = True,
    flink: FlinkSettings | None = None,
    job_endpoint: str = "embed",
    overwrite: bool = False,
) -> RunSummary:
    """Build and run the pipeline with progress reporting; write the report; return
    the summary. ``flink``: FlinkRunner settings (the environment settings also serve
    PortableRunner); ``job_endpoint``: PortableRunner's job server. A non-empty
    output folder is refused (:class:`pipelines.output_dir.OutputNotEmpty`) unless
    ``overwrite``: then the files of the earlier run are removed first; or unless the
    run resumes a stopped Flink job (``flink.savepoint_path``): then it adds to them."""
    resume = runner == "FlinkRunner" and flink is not None and flink.savepoint_path is not None
    output_dir.prepare(cfg.output, overwrite=overwrite, resume=resume)
    if runner == "FlinkRunner":
        flink = (flink or FlinkSettings()).for_run(live=cfg.live_read)
    beam_runner, options = runner_options(cfg, runner, flink=flink, job_endpoint=job_endpoint)
    with frozen_heap():  # what exists now outlives the run: the collector skips it
        return _run(cfg, runner, beam_runner, options, show_progress, flink)


def _run(
    cfg: PipelineConfig,
    runner: str,
    beam_runner: PipelineRunner | str,
    options: PipelineOptions,
    show_progress: bool,
    flink: FlinkSettings | None = None,
) -> RunSummary:
    start = time.perf_counter()
    pipeline = beam.Pipeline(runner=beam_runner, options=options)
    outputs = BUILDERS[cfg.pipeline](pipeline, cfg)
    watch = None  # Flink's own figures, read from its REST API; a live job drained
    if runner == "FlinkRunner" and flink is not None and flink.rest_url is not None:
        drain_when = outputs.source_finished if flink.keeps_sources else None
        watch = JobWatch(
            flink.rest_url, drain_when=drain_when, runs_until_stopped=flink.keeps_sources
        )
    run_id = uuid.uuid4().hex
    live = progress.start(run_id)
    progress.attach(run_id, outputs.batches, outputs.predictions, cfg.window.size_s,
                    count_keys=outputs.per_key_stats)  # fmt: skip
    events_in = outputs.source_events
    out = sys.stderr if show_progress else io.StringIO()
    server = None
    if cfg.serve_port is not None:  # live queries and the dashboard, for this run only
        BOARD.clear()
        server = LiveServer(cfg.serve_port, live, pipeline=cfg.pipeline).start()
        print(f"live queries and dashboard: {server.url}", file=out, flush=True)
    try:
        with progress.Printer(live, events_in, out=out):
            if watch is not None:
                watch.start()
            result = start_run(pipeline, runner)
            result.wait_until_finish()
    finally:
        progress.finish(run_id)  # the live figures stay in ``live``
        figures = None if watch is None else watch.stop()
        if server is not None:
            server.stop()
    seconds = time.perf_counter() - start
    notes = cfg.notes
    if watch is not None and watch.drained not in (None, "drained"):
        notes += (f"flink: the read was over, and the live job {watch.drained}",)
    if figures is not None and figures.stopped_with is not None:
        notes += (
            f"flink: the job was stopped with a savepoint ({figures.stopped_with}); a run "
            "started from it (--savepoint) goes on from there, into this --output",
        )
    restored = figures is not None and bool(figures.restarts or figures.restored)
    if events_in is None and restored and outputs.recount_events:
        try:
            events_in = outputs.recount_events()
            notes += (
                "events in: counted in the input after the run (Beam's counters start "
                "again at each of Flink's restores)",
            )
        except TopicError as err:
            notes += (f"events in: Beam's counter, which restarted at a restore ({err})",)
    if events_in is None:
        events_in = counters(result)["events_in"]
    summary = RunSummary.from_outputs(
        cfg.output,
        events_in=events_in,
        seconds=seconds,
        accumulating=cfg.trigger.accumulating,
        notes=notes,
        restored=restored,
    )
    if figures is not None:
        summary = dataclasses.replace(summary, flink=dataclasses.asdict(figures))
    if cfg.memory.enabled:
        summary = dataclasses.replace(summary, memory=memory_figures(result, cfg.memory))
    if summary.federated is not None and not restored:  # (a restore restarts counters)
        figures_f = {**summary.federated, **federated_metrics(result)}
        summary = dataclasses.replace(summary, federated=figures_f)
    if cfg.kafka_sink_topic is not None and not restored:  # (a restore restarts counters)
        summary = dataclasses.replace(
            summary, kafka_out=counters(result).get(Metric.KAFKA_RECORDS_OUT, 0)
        )
    report.write(
        cfg.output,
        summary,
        samples=live.samples,
        # the pipeline's own detectors where it ran them, else the progress tap's
        drift_alarms=list(summary.drift_alarms) if cfg.detects_drift else live.drift_alarms,
        source=cfg.source,
        inputs=cfg.inputs,
    )
    return summary


def _error(kind: str, err: Exception) -> None:
    print(f"pipelines/main.py: {kind}: {err}", file=sys.stderr)


def _apply_patches(runner: str, streaming: bool) -> None:
    """Our patches of Beam's local runners, for this run's mode (DirectRunner only:
    the other runners run our DoFns as they always did). On another Beam release
    than they were written for, a warning, and the run goes on unpatched."""
    if runner != "DirectRunner":
        return
    try:
        patches.apply(streaming=streaming)
    except patches.BeamVersionMismatch as err:
        print(f"pipelines/main.py: warning: {err}; running unpatched", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        cfg = config_from_args(args)
        flink = flink_from_args(args) if args.runner in ("FlinkRunner", "PortableRunner") else None
        if cfg.source != "synthetic":
            for path in cfg.inputs:
                input_features(cfg.source, path, csv_format(cfg))
    except UsageError as err:
        _error("error", err)
        return EXIT_USAGE
    except (BadInputError, ValueError) as err:
        _error("bad input", err)
        return EXIT_BAD_INPUT
    if args.beam_patches:
        _apply_patches(args.runner, cfg.streaming)
    try:
        summary = run(
            cfg,
            args.runner,
            show_progress=not args.quiet,
            flink=flink,
            job_endpoint=args.job_endpoint,
            overwrite=args.overwrite,
        )
    except output_dir.OutputNotEmpty as err:
        _error("error", err)
        return EXIT_USAGE
    except (FlinkUnavailable, PrismUnavailable) as err:
        _error("runner unavailable", err)
        return EXIT_RUNTIME
    except Exception as err:  # noqa: BLE001 - reported with its type, exit code says runtime
        _error("pipeline failed", f"{type(err).__name__}: {err}")  # type: ignore[arg-type]
        return EXIT_RUNTIME
    print(f"pipeline {args.pipeline} on {args.runner} -> {os.path.abspath(cfg.output)}")
    for line in summary.lines():
        print("  " + line)
    if args.json:
        print(summary.to_json())
    stopped = summary.flink is not None and summary.flink.get("stopped_with") is not None
    return EXIT_OK if summary.balanced or stopped else EXIT_MISMATCH


if __name__ == "__main__":
    sys.exit(main())
