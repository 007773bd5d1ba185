"""Command line for the local Kafka broker; ``.ci/setup`` installs it with ``install``.

Usage::

    python -m runners.kafka install | start | stop | status
    python -m runners.kafka create-topic --topic events --partitions 2
    python -m runners.kafka produce --topic events --events 100000 --rate 20000
    python -m runners.kafka produce --topic weather --input FILE.csv --label-column target
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.cache_dir import cache_dir
from model.streams.topics import TopicError
from runners import kafka
from runners.kafka.broker import KafkaUnavailable, LocalBroker, install
from runners.kafka.client import create_topic, produce, rows_of_batches


def events_of(args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """The events to produce: the CSV file's good rows, or the synthetic stream."""
    if args.input:
        from model.streams.csv_parse import CsvFormat, feature_names, parse_lines

        fmt = CsvFormat(label_column=args.label_column, time_column=args.time_column)
        names = feature_names(args.input, fmt)
        with open(args.input, encoding="utf-8", errors="replace", newline="") as f:
            chunks = parse_lines(f, fmt, os.path.basename(args.input))
            batches = (c.batch for c in chunks if c.batch is not None)
            yield from rows_of_batches(batches, names, label_field=args.label_column or "label")
        return
    from model.streams.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(num_events=args.events or 20_000, seed=args.seed)
    names = [f"x{i}" for i in range(cfg.num_features)]
    yield from rows_of_batches((c.batch for c in generate(cfg)), names)


def main(argv: list[str] | None = None) -> int:
    doc = kafka.__doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m runners.kafka", description=doc.split("\n")[0])
    ap.add_argument(
        "command", choices=["install", "start", "stop", "status", "create-topic", "produce"]
    )
    ap.add_argument("--run-dir", default=str(cache_dir() / "kafka-run"))
    ap.add_argument("--port", type=int, default=9092)
    ap.add_argument("--controller-port", type=int, default=9093)
    ap.add_argument("--bootstrap", default=None, help="a broker's address (default: ours)")
    ap.add_argument("--topic", default="events")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--input", default=None, help="produce: a CSV file (default: synthetic)")
    ap.add_argument("--label-column", default=None)
    ap.add_argument("--time-column", default="timestamp")
    ap.add_argument("--events", type=int, default=None, help="produce: at most this many")
    ap.add_argument("--rate", type=float, default=None, help="produce: events per second")
    ap.add_argument("--duration", type=float, default=None, help="produce: at most seconds")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    broker = LocalBroker(Path(args.run_dir), port=args.port, controller_port=args.controller_port)
    bootstrap = args.bootstrap or broker.bootstrap
    try:
        if args.command == "install":
            print(f"Kafka {broker.version} in {install(broker.version)}")
        elif args.command == "start":
            pid = broker.start()
            print(f"started Kafka {broker.version} (PID {pid}) at {broker.bootstrap}")
        elif args.command == "stop":
            broker.stop()
            print("stopped")
        elif args.command == "status":
            print(json.dumps(broker.status()))
        elif args.command == "create-topic":
            made = create_topic(bootstrap, args.topic, args.partitions)
            print(f"{'created' if made else 'exists:'} {args.topic} on {bootstrap}")
        else:
            create_topic(bootstrap, args.topic, args.partitions)
            done = produce(
                bootstrap,
                args.topic,
                events_of(args),
                rate=args.rate,
                count=args.events,
                duration_s=args.duration,
            )
            print(f"produced {done.events:,} events to {args.topic} in {done.seconds:.2f} s "
                  f"({done.events_per_s:,.0f}/s)")  # fmt: skip
    except (KafkaUnavailable, TopicError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
