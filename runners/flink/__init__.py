"""Apache Flink for Beam Python: the job-server jar, a local standalone cluster, options.

- :mod:`~runners.flink.settings`: :class:`FlinkSettings` (how a pipeline runs on
  Flink) and :func:`flink_args` / :func:`job_args`, the pipeline arguments for them;
- :mod:`~runners.flink.jars`: :func:`job_server_jar` resolves Beam's published Flink
  job server into a cache outside the checkout; :func:`job_server` falls back to one
  assembled from Maven Central (:mod:`~runners.flink.jobserver`, with its
  loopback-only gRPC ``ServerFactory`` in ``java/``); :func:`cluster_version` is the
  Flink release a local cluster then needs; :class:`FlinkUnavailable` says what is
  missing;
- :mod:`~runners.flink.cluster`: :class:`LocalCluster`, a standalone Flink assembled
  from PyPI wheels, bound to 127.0.0.1, started and stopped by PID;
- :mod:`~runners.flink.workers`: :class:`WorkerPool`, a Beam Python worker pool on
  127.0.0.1 for ``--environment-type EXTERNAL``.

Command line (also used by ``.ci/setup`` to install the cluster files)::

    python -m runners.flink install | jar | cluster start | cluster stop | cluster status
    python -m runners.flink worker-pool --port 50000   # for --environment-type EXTERNAL

Importing this package starts nothing (no JVM, no Maven, no download): that happens
when a job server, jar or cluster is asked for.
"""

from __future__ import annotations

from runners.flink.cluster import LocalCluster
from runners.flink.jars import (
    FLINK_MINOR,
    FLINK_VERSION,
    FlinkUnavailable,
    beam_version,
    cluster_version,
    job_server,
    job_server_artifact,
    job_server_jar,
)
from runners.flink.settings import (
    IDLE_SOURCE_SHUTDOWN_MS,
    JAVA17_OPENS,
    LIVE_BUNDLE_MS,
    FlinkSettings,
    flink_args,
    job_args,
)
from runners.flink.workers import WorkerPool
from runners.processes import HOST

__all__ = [
    "FLINK_MINOR",
    "FLINK_VERSION",
    "HOST",
    "IDLE_SOURCE_SHUTDOWN_MS",
    "JAVA17_OPENS",
    "LIVE_BUNDLE_MS",
    "FlinkSettings",
    "FlinkUnavailable",
    "LocalCluster",
    "WorkerPool",
    "beam_version",
    "cluster_version",
    "flink_args",
    "job_args",
    "job_server",
    "job_server_artifact",
    "job_server_jar",
]
