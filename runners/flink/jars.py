"""Which Flink job server runs our pipelines: Beam's published jar, or one assembled.

:func:`job_server_jar` resolves Beam's Flink job server
(``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam version>``) into a cache
outside the checkout (``$SML_CACHE/jars``, default ``~/.cache/streaming-ml``),
downloading it from Maven Central (``$SML_MAVEN_REPO`` overrides the repository) once;
when it cannot be had, :class:`FlinkUnavailable` names the artifact, the address tried
and where to put the jar by hand. :func:`job_server` falls back to one assembled from
Maven Central for Flink 1.19 (:mod:`runners.flink.jobserver`), and
:func:`cluster_version` is the Flink release a local cluster then needs.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from model.cache_dir import cache_dir
from runners.flink import jobserver

FLINK_VERSION = "2.2.1"
FLINK_MINOR = "2.2"
# The Flink release a standalone cluster is assembled from, per job-server minor version.
FLINK_VERSIONS = {FLINK_MINOR: FLINK_VERSION, jobserver.ASSEMBLED_FLINK_MINOR: "1.19.3"}
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"


class FlinkUnavailable(RuntimeError):
    """A Flink part (job-server jar, cluster files, cluster) cannot be had here."""


def beam_version() -> str:
    import apache_beam

    return str(apache_beam.__version__)


def job_server_artifact(flink_minor: str = FLINK_MINOR, version: str | None = None) -> str:
    return (
        f"org.apache.beam:beam-runners-flink-{flink_minor}-job-server:{version or beam_version()}"
    )


def job_server_jar(
    flink_minor: str = FLINK_MINOR,
    version: str | None = None,
    *,
    cache: Path | None = None,
    repo: str | None = None,
) -> Path:
    """The job-server jar in the cache, downloaded first if missing."""
    version = version or beam_version()
    name = f"beam-runners-flink-{flink_minor}-job-server"
    path = (cache or cache_dir()) / "jars" / f"{name}-{version}.jar"
    if path.is_file():
        return path
    repo = (repo or os.environ.get("SML_MAVEN_REPO") or MAVEN_CENTRAL).rstrip("/")
    url = f"{repo}/org/apache/beam/{name}/{version}/{name}-{version}.jar"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".part{os.getpid()}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        os.replace(partial, path)  # atomic: a reader never sees half a jar
    except (urllib.error.URLError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        reason = getattr(err, "reason", None) or err
        msg = (
            f"the Beam Flink job server {job_server_artifact(flink_minor, version)} is not "
            f"available: fetching {url} failed: {reason}. Put the jar at {path} (or pass "
            "--flink-job-server-jar) to run on Flink"
        )
        raise FlinkUnavailable(msg) from None
    return path


_chosen: dict[Path, jobserver.JobServer] = {}


def job_server(cache: Path | None = None) -> jobserver.JobServer:
    """The job server to run: Beam's published jar for Flink 2.2 when it can be had,
    else the one assembled from Maven Central for Flink 1.19 (see
    :mod:`runners.flink.jobserver`). Decided once per process and cache."""
    cache = cache or cache_dir()
    if cache not in _chosen:
        try:
            _chosen[cache] = jobserver.JobServer(job_server_jar(cache=cache), FLINK_MINOR, False)
        except FlinkUnavailable as published:
            try:
                jar = jobserver.assemble(cache)
            except jobserver.JobServerUnavailable as assembled:
                msg = f"{published}; assembling one from Maven Central failed too: {assembled}"
                raise FlinkUnavailable(msg) from None
            _chosen[cache] = jobserver.JobServer(jar, jobserver.ASSEMBLED_FLINK_MINOR, True)
    return _chosen[cache]


def cluster_version(cache: Path | None = None) -> str:
    """The Flink release for a standalone cluster the job server can submit to (with
    no job server at all, the release of Beam's published one)."""
    try:
        return FLINK_VERSIONS[job_server(cache).flink_minor]
    except FlinkUnavailable:
        return FLINK_VERSION
