"""The command line's options: every flag, its default and its help text.

:func:`build_parser` is what ``python pipelines/main.py --help`` prints;
:mod:`pipelines.cli` turns the parsed options into a validated config.
"""

from __future__ import annotations

import argparse

from model.backpressure import STRATEGIES
from pipelines.config import PIPELINES

DOC = """Run a streaming ML pipeline end to end and print a summary.

    python pipelines/main.py --runner DirectRunner

runs the default: the synthetic drifting stream, replayed in streaming mode with
out-of-order and late events, 10 s event-time windows, and the classify pipeline: a
PyTorch MLP that predicts each event and then learns from it, in event-time order
(``--mode decoupled``: a trainer whose new versions reach a separate scorer in the
same run, with early, on-time and late panes). Outputs land under ``--output``."""


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    pipelines = "; ".join(f"{name}: {text}" for name, text in PIPELINES.items())
    p = argparse.ArgumentParser(
        prog="pipelines/main.py",
        description=DOC,
        epilog=f"pipelines -- {pipelines}",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--config",
        metavar="FILE.yaml",
        help="YAML file of option: value defaults (command-line options override it)",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--runner",
        default="DirectRunner",
        help="Beam runner: DirectRunner (local; streaming on the reference streaming "
        "runner, bounded on the portable in-process runner), FlinkRunner (see the flink "
        "options), PrismRunner (Beam's portable local runner, built once with Go), "
        "PortableRunner (a job server at --job-endpoint) or any other Beam runner name, "
        "passed to Beam as is",
    )
    run.add_argument(
        "--pipeline", default="classify", choices=sorted(PIPELINES), help="which pipeline to run"
    )
    run.add_argument("--output", default="output", help="directory for all outputs")
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="run into a non-empty --output: the files of the earlier run are removed "
        "first (without it, such a run is refused)",
    )
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
    run.add_argument(
        "--backpressure",
        default="unbounded",
        choices=STRATEGIES,
        help="how scoring and (autograd) learning size their passes against "
        "--memory-budget: unbounded (as they come; an out-of-memory error splits), fixed, "
        "aimd, pid (on the headroom), credit (bytes handed out as credits, learned from "
        "measured steps) or accumulate (credit, with the micro-batches of a learning step "
        "accumulated: the same gradient in less memory). On Flink, Flink's own "
        "backpressure acts upstream; the summary shows both",
    )
    run.add_argument(
        "--memory-budget",
        metavar="SIZE",
        help="memory a pass or micro-batch may take (e.g. 512M, 2G): measured on the "
        "device (CUDA's allocator, or on the CPU a counting allocator); every step over "
        "it is counted in the summary",
    )
    run.add_argument(
        "--memory-cap",
        metavar="SIZE",
        help="a hard cap per step where the allocator refuses (out-of-memory), for "
        "trying the out-of-memory path on a machine with more memory",
    )
    run.add_argument(
        "--serve-port",
        type=int,
        metavar="P",
        help="serve live queries (/api/state, /api/topk, /api/predict) and a live "
        "dashboard (/) on 127.0.0.1:P while the run lasts (0: any free port)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed for data and model")
    run.add_argument("--json", action="store_true", help="also print the summary as JSON")
    run.add_argument("--quiet", action="store_true", help="no progress lines while running")
    run.add_argument(
        "--beam-patches",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="DirectRunner: apply our documented speed-ups of Beam's local runners "
        "(runners/patches; same results); refused, with a warning, on another Beam release",
    )

    fl = p.add_argument_group("flink and portable runners")
    fl.add_argument(
        "--flink-master",
        default="[local]",
        help="[local]: an embedded mini-cluster in the job server; or host:port of a "
        "Flink cluster's REST endpoint (python -m runners.flink cluster start)",
    )
    fl.add_argument("--parallelism", type=int, default=1, help="Flink parallelism")
    fl.add_argument(
        "--checkpointing-interval", type=int, default=None, help="checkpoint every N ms"
    )
    fl.add_argument("--state-backend", default=None, help="hashmap or rocksdb")
    fl.add_argument(
        "--state-backend-path", default=None, help="checkpoint storage (file:///... or a URI)"
    )
    fl.add_argument(
        "--environment-type",
        default="LOOPBACK",
        help="where Python workers run: LOOPBACK (this process) or EXTERNAL (a worker pool)",
    )
    fl.add_argument("--environment-config", default=None, help="EXTERNAL: worker pool host:port")
    fl.add_argument(
        "--savepoint",
        default=None,
        help="start from this savepoint of a stopped job (python -m runners.flink savepoint) "
        "and add to its --output",
    )
    fl.add_argument(
        "--job-endpoint",
        default="embed",
        help="with --runner PortableRunner: a running job server's host:port (e.g. a "
        "Flink job server), or embed for Beam's in-process portable job service",
    )
    fl.add_argument(
        "--flink-job-server-jar",
        default=None,
        help="the Beam Flink job-server jar (default: resolved into the cache, downloaded once)",
    )

    src = p.add_argument_group("source")
    src.add_argument(
        "--source",
        default="synthetic",
        choices=["synthetic", "csv", "nab", "tfrecord", "kafka"],
        help="synthetic drifting stream, a generic CSV file, NAB 'timestamp,value' files, "
        "a Kafka topic of JSON records (--topic, --bootstrap), "
        "or TFRecord files of tf.Example records (decoded by tfx-bsl; the same column "
        "options name the features)",
    )
    src.add_argument(
        "--input",
        action="append",
        default=[],
        help="input file or glob (repeatable) for --source csv/nab/tfrecord",
    )
    src.add_argument("--topic", default=None, help="--source kafka: the topic to read")
    src.add_argument(
        "--bootstrap", default="127.0.0.1:9092", help="--source kafka: a broker's address"
    )
    src.add_argument(
        "--kafka-until",
        default="end",
        choices=["end", "never"],
        help="--source kafka: read to the end offsets the topic has when the run starts "
        "(a bounded read), or on and on (a live read: Prism or Flink; Beam's streaming "
        "DirectRunner fails on this splittable DoFn)",
    )
    src.add_argument(
        "--kafka-stop-idle",
        type=float,
        default=None,
        help="--source kafka with --kafka-until never: end the read once a partition has "
        "had no new record for this many seconds (a live run that finishes)",
    )
    src.add_argument(
        "--sink-topic",
        default=None,
        help="also send every prediction to this Kafka topic at --bootstrap: one JSON "
        "record a row, keyed by [key, event_id], one transaction a bundle (read it with "
        "isolation.level=read_committed; the last value per key is each event once)",
    )
    src.add_argument("--label-column", default=None, help="generic CSV: integer class label column")
    src.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="generic CSV: the classes are 0..N-1; a row with any other label is "
        "dead-lettered before a learner sees it (default: from the labels of the first rows)",
    )
    src.add_argument(
        "--new-classes",
        default="dead-letter",
        choices=["dead-letter", "grow"],
        help="a label beyond the classes: dead-lettered, or (grow) learned as a new class, "
        "the model's output layer growing to it (up to --max-classes)",
    )
    src.add_argument(
        "--max-classes",
        type=int,
        default=100,
        help="with --new-classes grow: labels 0..N-1 are learned, others dead-lettered",
    )
    src.add_argument("--time-column", default="timestamp", help="generic CSV: event time column")
    src.add_argument(
        "--allowed-keys",
        default=None,
        help="comma-separated keys to accept; rows with any other key are dead-lettered",
    )
    src.add_argument(
        "--watermark-lag",
        type=float,
        default=None,
        help="CSV streaming: seconds the watermark trails the newest event time "
        "(default: the data's typical spacing of events)",
    )
    src.add_argument(
        "--watermark-interval",
        type=float,
        default=0.0,
        help="streaming: emit the watermark only every N seconds of event time; batches "
        "in between arrive together (0: after every batch)",
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

    reco = p.add_argument_group("recommend")
    reco.add_argument("--user-column", default="user", help="recommend: the user id column")
    reco.add_argument("--item-column", default="item", help="recommend: the item id column")
    reco.add_argument(
        "--rating-column",
        default="rating",
        help="recommend: the rating column (an empty cell: predict only); '' for none "
        "(implicit feedback: every interaction a 1.0)",
    )
    reco.add_argument(
        "--factors", type=int, default=16, help="recommend: embedding size of users and items"
    )
    reco.add_argument(
        "--id-buckets",
        type=int,
        default=None,
        help="recommend: hash user and item ids into this many rows each (bounded "
        "embeddings; collisions counted in /api/state); default: a row per id",
    )
    reco.add_argument(
        "--negatives",
        type=int,
        default=None,
        help="recommend: items sampled as 0-ratings after each interaction (negative "
        "sampling; default 4 for implicit feedback, i.e. --rating-column '', else 0)",
    )

    fed = p.add_argument_group("federated (each key a device; each window a round)")
    fed.add_argument(
        "--fed-mode",
        default="fedavg",
        choices=["fedavg", "async", "local", "central"],
        help="federated: FedAvg per round, the buffered asynchronous variant, devices "
        "alone, or one learner on every event (the reference)",
    )
    fed.add_argument(
        "--compression",
        default="none",
        choices=["none", "topk", "int8"],
        help="federated: how devices compress their updates (with error feedback)",
    )
    fed.add_argument(
        "--topk-fraction",
        type=float,
        default=0.05,
        help="federated: share of coordinates a top-k update keeps",
    )
    fed.add_argument(
        "--max-update-bytes",
        type=int,
        default=None,
        help="federated: a device's budget of bytes per update (top-k fits it)",
    )
    fed.add_argument(
        "--secure",
        action="store_true",
        help="federated: pairwise secure-aggregation masks (the aggregator sees only the sum)",
    )
    fed.add_argument(
        "--dp-clip", type=float, default=None, help="federated: clip each update to this L2 norm"
    )
    fed.add_argument(
        "--dp-noise",
        type=float,
        default=0.0,
        help="federated: Gaussian noise at the aggregator, as a multiple of the clip",
    )
    fed.add_argument(
        "--personalize",
        type=float,
        default=0.0,
        help="federated: share of a device's own weights it keeps at each round",
    )
    fed.add_argument(
        "--steps-per-round",
        type=int,
        default=None,
        help="federated: a device's budget of learning steps per round",
    )
    fed.add_argument(
        "--min-samples",
        type=int,
        default=1,
        help="federated: devices with fewer events in a round sit it out",
    )

    win = p.add_argument_group("windows and triggers")
    win.add_argument("--window", default="fixed", choices=["fixed", "sliding", "session", "global"])
    win.add_argument(
        "--window-size",
        type=float,
        default=None,
        help="seconds (default: synthetic 10; CSV/NAB: chosen from the data's own time "
        "scale, about 32 events per window, rounded to a round duration; the summary says)",
    )
    win.add_argument("--window-period", type=float, default=None, help="sliding: seconds")
    win.add_argument(
        "--frame",
        type=int,
        default=None,
        help="fixed windows: how many windows make one Beam window (a frame; statistics "
        "stay per window). Default: CSV/NAB/TFRecord: enough for about 32 events (1 when a "
        "window holds that many); synthetic: 1",
    )
    win.add_argument("--session-gap", type=float, default=10.0, help="session: seconds")
    win.add_argument(
        "--allowed-lateness",
        type=float,
        default=None,
        help="seconds after the window end during which late data is still accepted "
        "(default: three windows)",
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
        default=None,
        choices=["decoupled", "coupled"],
        help="coupled (the default): one step per model predicts each event, then learns "
        "from it, in event-time order (exact prequential: every event scored by a model "
        "that has seen every earlier one); decoupled (the default with --label-delay): a "
        "trainer publishes a version per window and a scorer that scales out reads them "
        "as a side input (window k+1 scored by the model trained through k)",
    )
    learn.add_argument("--per-key", action="store_true", help="one model per key (coupled)")
    learn.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    learn.add_argument("--lr", type=float, default=0.01, help="learning rate")
    learn.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="scale features by their running mean and deviation before the model "
        "(folded into every published version)",
    )
    learn.add_argument(
        "--lag-label",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the class of the key's previous event (strictly earlier in event time, "
        "known by then) to the features: what a no-change classifier knows",
    )
    learn.add_argument(
        "--label-delay",
        type=float,
        default=None,
        help="seconds of event time after which each event's label becomes known "
        "(decoupled mode, the default with it; streaming and bounded runs): events are "
        "scored without it, and the prediction is "
        "evaluated (<output>/evaluation/, never-labelled events in <output>/unlabelled/) "
        "and learned from when it comes; turns --lag-label off",
    )
    learn.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="labels from a CSV file instead of the input (decoupled mode, the default "
        "with it): columns event_id, the events' time column, the label column, "
        "label_time (when the label became known) and key (unless the one input's name "
        "is the key); each prediction is evaluated and learned from once the stream's "
        "watermark passes its label_time, as with --label-delay; bad rows go to "
        "<output>/label_dead_letter/",
    )
    learn.add_argument(
        "--label-time-column",
        default="label_time",
        help="--labels: the column saying when each label became known",
    )
    learn.add_argument(
        "--label-wait",
        type=float,
        default=None,
        help="--labels: seconds of event time an event waits for its label past its "
        "window's end and the allowed lateness (default: the longest wait in the file)",
    )
    learn.add_argument(
        "--drift-detector",
        default="page-hinkley",
        choices=["page-hinkley", "adwin", "ddm", "none"],
        help="watch every key's prequential error (Page-Hinkley and ADWIN with River's "
        "settings, or DDM); alarms go to <output>/drift/ and the report's timeline; "
        "--adapt acts on this detector's alarms (Page-Hinkley's with none)",
    )
    learn.add_argument(
        "--feature-drift",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compare every window's feature distributions with the previous window's "
        "(tfx-bsl quantile sketches, Kolmogorov-Smirnov distance); to <output>/feature_drift/",
    )
    learn.add_argument(
        "--adapt",
        default="none",
        choices=["none", "reset", "lr-boost", "background"],
        help="on a drift alarm of the learner's own prequential error (--drift-detector): "
        "reset the model, multiply its learning rate by 5 for the next 500 samples, or "
        "(background) switch to a fresh model started at the warning before it",
    )
    learn.add_argument("--replay-size", type=int, default=0, help="reservoir replay rows")
    learn.add_argument("--ewc-lambda", type=float, default=0.0, help="online EWC strength")
    learn.add_argument(
        "--learner-device",
        default="cpu",
        help="torch device the online learner trains on: cpu (small MLPs train fastest "
        "there, with the fused kernel), cuda, cuda:N or auto",
    )
    learn.add_argument(
        "--emit-every", type=int, default=None, help="also publish a version every N samples"
    )
    learn.add_argument(
        "--publish-min-samples",
        type=int,
        default=16,
        help="a window end publishes a new model version once at least N labelled samples "
        "were learned since the last one (a sparse stream then writes a version per N "
        "events, not per window); until then the last version serves on",
    )
    learn.add_argument(
        "--publish-every",
        type=float,
        default=None,
        help="also publish at a window end once this many seconds of event time passed "
        "since the last version (and anything was learned)",
    )
    learn.add_argument(
        "--step-rows",
        type=int,
        default=1,
        help="rows per optimizer step: micro-batches are learned in event-time order in "
        "steps of this size (1: every event its own step, as a per-event learner; "
        "0: one step per micro-batch)",
    )
    win.add_argument(
        "--accumulating",
        action="store_true",
        help="panes accumulate (default: discarding, each pane has only new data)",
    )
    return p
