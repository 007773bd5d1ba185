"""Command line for the Flink set-up; ``.ci/setup`` installs the cluster files with it.

Usage::

    python -m runners.flink install | jar | cluster start | cluster stop | cluster status
    python -m runners.flink worker-pool --port 50000   # for --environment-type EXTERNAL
    python -m runners.flink savepoint --master 127.0.0.1:8081 --dir /path/savepoints

``savepoint`` stops a running job (``--job``, default: the newest) with a savepoint in
``--dir`` and prints its path: ``pipelines/main.py ... --savepoint PATH`` resumes it
(``--drain``: the last windows fire first, a job to end rather than resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.cache_dir import cache_dir
from runners import flink
from runners.flink import jars, rest, workers
from runners.flink.cluster import LocalCluster
from runners.flink.jars import FlinkUnavailable


def main(argv: list[str] | None = None) -> int:
    doc = flink.__doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m runners.flink", description=doc.split("\n")[0])
    ap.add_argument("command", choices=["install", "jar", "cluster", "worker-pool", "savepoint"])
    ap.add_argument("action", nargs="?", choices=["start", "stop", "status"])
    ap.add_argument("--run-dir", default=str(cache_dir() / "flink-run"))
    ap.add_argument("--rest-port", type=int, default=8081)
    ap.add_argument(
        "--standby", type=int, default=0, help="cluster start: spare TaskManagers (failover)"
    )
    ap.add_argument("--port", type=int, default=50000, help="worker-pool: its port")
    ap.add_argument("--master", default="127.0.0.1:8081", help="savepoint: the cluster")
    ap.add_argument("--job", default=None, help="savepoint: the job id (default: the newest)")
    ap.add_argument("--dir", default=None, help="savepoint: the folder to write it in")
    ap.add_argument("--drain", action="store_true", help="savepoint: fire every window first")
    args = ap.parse_args(argv)
    if args.command == "worker-pool":
        workers.serve(args.port)
        return 0
    if args.command == "savepoint":
        return _savepoint(args)
    cluster = LocalCluster(Path(args.run_dir), rest_port=args.rest_port, standby=args.standby)
    try:
        if args.command == "install":
            print(f"Flink {cluster.version} in {cluster.install()}")
        elif args.command == "jar":
            chosen = jars.job_server()
            kind = "assembled from Maven Central" if chosen.assembled else "published"
            print(f"{chosen.jar} (Flink {chosen.flink_minor}, {kind})")
        elif args.action == "start":
            overview = cluster.start()
            print(f"started {cluster.pids()} at {cluster.rest_url}: {json.dumps(overview)}")
        elif args.action == "stop":
            cluster.stop()
            print("stopped")
        elif args.action == "status":
            print(json.dumps({"pids": cluster.pids(), "overview": cluster.status()}))
        else:
            ap.error("cluster needs start, stop or status")
    except FlinkUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def _savepoint(args: argparse.Namespace) -> int:
    if not args.dir:
        print("error: savepoint needs --dir", file=sys.stderr)
        return 2
    url = f"http://{args.master}"
    job = args.job or next(iter(rest.running_jobs(url)), None)
    if job is None:
        print(f"error: no running job at {url}", file=sys.stderr)
        return 1
    try:
        path = rest.stop_with_savepoint(url, job, str(Path(args.dir).resolve()), drain=args.drain)
    except rest.SavepointFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
