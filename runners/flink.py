"""Apache Flink for Beam Python: the job-server jar, a local standalone cluster, options.

- :func:`job_server_jar` resolves Beam's Flink job server
  (``org.apache.beam:beam-runners-flink-<minor>-job-server:<beam version>``) into a
  cache outside the checkout (``$SML_CACHE/jars``, default ``~/.cache/streaming-ml``),
  downloading it from Maven Central (``$SML_MAVEN_REPO`` overrides the repository)
  once; when it cannot be had, :class:`FlinkUnavailable` names the artifact, the
  address tried and where to put the jar by hand. :func:`job_server` falls back to
  one assembled from Maven Central for Flink 1.19 (:mod:`runners.jobserver`), and
  :func:`cluster_version` is the Flink release a local cluster then needs.
- :class:`LocalCluster` assembles a standalone Flink from the PyPI wheels
  ``apache-flink-libraries`` (``lib/``, ``opt/``, ``plugins/``) and ``apache-flink``
  (``bin/``, ``conf/``), downloaded with ``--no-deps`` and unpacked, never installed
  next to Beam; binds the JobManager, TaskManager and REST endpoint to 127.0.0.1;
  starts both processes with Flink's own scripts, keeps their PIDs and logs in its
  run directory and stops them by PID.
- :class:`WorkerPool` runs a Beam Python worker pool on 127.0.0.1 for
  ``--environment-type EXTERNAL`` (Beam's own entry point binds every interface).
- :func:`flink_args` turns our options (master, parallelism, checkpointing, state
  backend, SDK environment) into FlinkRunner pipeline arguments.

Command line (also used by ``.ci/setup`` to install the cluster files)::

    python -m runners.flink install | jar | cluster start | cluster stop | cluster status
    python -m runners.flink worker-pool --port 50000   # for --environment-type EXTERNAL
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.cache_dir import cache_dir
from runners import jobserver

FLINK_VERSION = "2.2.1"
FLINK_MINOR = "2.2"
# The Flink release a standalone cluster is assembled from, per job-server minor version.
FLINK_VERSIONS = {FLINK_MINOR: FLINK_VERSION, jobserver.ASSEMBLED_FLINK_MINOR: "1.19.3"}
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"
HOST = "127.0.0.1"
# Beam's own tests start the job server with these on Java 17; Flink's (Kryo) state
# serialization of side inputs needs java.util open too.
JAVA17_OPENS = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
)


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
    :mod:`runners.jobserver`). Decided once per process and cache."""
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


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass
class LocalCluster:
    """A standalone Flink session cluster on this machine (see the module docstring)."""

    run_dir: Path
    rest_port: int = 8081
    slots: int = 2
    version: str = ""  # default: the release the job server submits to (cluster_version)
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.version = self.version or cluster_version()
        self.home = cache_dir() / f"flink-{self.version}"

    # -- files --------------------------------------------------------------------
    def install(self) -> Path:
        """Download the two wheels (cached) and assemble FLINK_HOME; idempotent."""
        stamp = self.home / ".assembled"
        if stamp.is_file():
            return self.home
        wheels = cache_dir() / "flink-wheels"
        wheels.mkdir(parents=True, exist_ok=True)
        specs = [f"apache-flink-libraries=={self.version}", f"apache-flink=={self.version}"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels)]
        done = subprocess.run([*cmd, *specs], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"cannot download the Flink {self.version} wheels: {done.stderr.strip()[-500:]}"
            raise FlinkUnavailable(msg)
        partial = self.home.with_name(self.home.name + f".part{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            self._unpack(wheels, partial)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        shutil.rmtree(self.home, ignore_errors=True)
        os.replace(partial, self.home)
        (self.home / ".assembled").write_text(self.version)
        return self.home

    def _unpack(self, wheels: Path, partial: Path) -> None:
        """bin/ and conf/ from apache-flink's wheel; lib/, opt/, plugins/ and
        bash-java-utils.jar from apache-flink-libraries (a wheel, or for 1.x a source
        archive with them under ``deps/``)."""
        v = self.version
        found = [
            *wheels.glob(f"apache_flink*-{v}-*.whl"),
            *wheels.glob(f"apache-flink-libraries-{v}.tar.gz"),
        ]
        for archive in sorted(found):
            libraries = "libraries" in archive.name
            wanted = ("lib/", "opt/", "plugins/", "bin/") if libraries else ("bin/", "conf/")
            for rel, read in _members(archive, (f"apache-flink-libraries-{v}/deps/", "pyflink/")):
                if not rel.startswith(wanted):
                    continue
                target = partial / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with read() as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if rel.startswith("bin/") or rel.endswith(".sh"):
                    target.chmod(0o755)
        if not (partial / "lib" / f"flink-dist-{v}.jar").is_file():
            msg = f"the Flink {v} wheels in {wheels} hold no flink-dist jar"
            raise FlinkUnavailable(msg)

    def _conf_dir(self) -> Path:
        """A conf/ of this cluster's own in the run directory (the install stays clean)."""
        conf = self.run_dir / "conf"
        if conf.exists():
            shutil.rmtree(conf)
        shutil.copytree(self.home / "conf", conf)
        settings = {
            "jobmanager.rpc.address": HOST,
            "jobmanager.bind-host": HOST,
            "jobmanager.memory.process.size": "1024m",
            "taskmanager.host": HOST,
            "taskmanager.bind-host": HOST,
            "taskmanager.numberOfTaskSlots": self.slots,
            "taskmanager.memory.process.size": "1536m",
            "rest.address": HOST,
            "rest.bind-address": HOST,
            "rest.port": self.rest_port,
            "env.pid.dir": str(self.run_dir / "pids"),
            "env.log.dir": str(self.run_dir / "log"),
            "web.tmpdir": str(self.run_dir / "web"),
            "io.tmp.dirs": str(self.run_dir / "tmp"),
        }
        # Flink's own JVM options (e.g. Java 17's --add-opens) are kept.
        java_opts = _java_opts(conf / "config.yaml")
        if java_opts:
            settings["env.java.opts.all"] = java_opts
        for sub in ("pids", "log", "web", "tmp"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        lines = [f"{k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in settings.items()]
        (conf / "config.yaml").write_text("\n".join(lines) + "\n")
        (conf / "masters").write_text(f"{HOST}:{self.rest_port}\n")
        (conf / "workers").write_text(f"{HOST}\n")
        return conf

    def _env(self, conf: Path) -> dict[str, str]:
        env = dict(os.environ, FLINK_HOME=str(self.home), FLINK_CONF_DIR=str(conf))
        env["FLINK_PID_DIR"] = str(self.run_dir / "pids")
        env["FLINK_LOG_DIR"] = str(self.run_dir / "log")
        return env

    # -- processes ------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """PIDs of this cluster's live processes: ``jobmanager``, ``taskmanager``."""
        out = {}
        for role, daemon in (("jobmanager", "standalonesession"), ("taskmanager", "taskexecutor")):
            for pid in self._all_pids(daemon):
                if self._ours(pid, daemon):
                    out[role] = pid
        return out

    def _ours(self, pid: int, daemon: str) -> bool:
        """``pid`` runs, and is this cluster's Flink ``daemon`` (its entry point with
        this run's conf directory): a PID file can outlive its process, and the PID
        can since belong to someone else."""
        if not _pid_alive(pid):
            return False
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        entry = _ENTRY_POINTS[daemon].encode()
        conf = str(self.run_dir / "conf").encode()
        return entry in args and conf in args

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Start the JobManager and one TaskManager; wait until the TaskManager has
        registered. Returns the REST overview."""
        if self.pids():
            msg = f"a cluster already runs from {self.run_dir}: {self.pids()}"
            raise FlinkUnavailable(msg)
        if self.status() is not None or not _port_free(self.rest_port):
            msg = f"port {self.rest_port} on {HOST} is taken: pass another --rest-port"
            raise FlinkUnavailable(msg)
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise FlinkUnavailable("Flink needs Java: no java on PATH and no JAVA_HOME")
        self.install()
        self._conf_dir()
        self._daemon("jobmanager.sh")
        self._daemon("taskmanager.sh")
        return self.wait_for_taskmanagers(1, timeout_s)

    def start_taskmanager(self) -> int:
        """Start one more TaskManager (e.g. after one was killed); its PID."""
        before = set(self._all_pids("taskexecutor"))
        self._daemon("taskmanager.sh")
        new = [p for p in self._all_pids("taskexecutor") if p not in before and _pid_alive(p)]
        if not new:
            raise FlinkUnavailable("the new TaskManager did not start")
        return new[-1]

    def _daemon(self, script: str) -> None:
        conf = self.run_dir / "conf"
        done = subprocess.run(
            ["bash", str(self.home / "bin" / script), "start"],
            env=self._env(conf),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            self.stop()
            msg = f"{script} start failed: {(done.stdout + done.stderr).strip()[-800:]}"
            raise FlinkUnavailable(msg)

    def _all_pids(self, daemon: str) -> list[int]:
        return [
            int(line)
            for pid_file in (self.run_dir / "pids").glob(f"flink-*-{daemon}.pid")
            for line in pid_file.read_text().split()
            if line.isdigit()
        ]

    def wait_for_taskmanagers(self, count: int, timeout_s: float) -> dict[str, Any]:
        """Wait until ``count`` TaskManagers have registered and offered their slots."""
        deadline = time.monotonic() + timeout_s
        overview: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if "jobmanager" not in self.pids():
                break  # ours died: do not wait for it, nor trust another cluster's answer
            overview = self.status()
            # A TaskManager registers first and offers its slots a moment later.
            if (
                overview is not None
                and overview.get("taskmanagers", 0) >= count
                and overview.get("slots-total", 0) >= count * self.slots
            ):
                return overview
            time.sleep(0.5)
        logs = sorted((self.run_dir / "log").glob("*.log"))
        tail = logs[-1].read_text()[-800:] if logs else "(no log)"
        self.stop()
        msg = f"no {count} TaskManager(s) within {timeout_s:.0f}s (last: {overview}); log: {tail}"
        raise FlinkUnavailable(msg)

    def status(self) -> dict[str, Any] | None:
        """The REST ``/v1/overview`` (TaskManagers, slots, jobs, flink-version), or None
        when the REST endpoint does not answer."""
        try:
            with urllib.request.urlopen(self.rest_url + "/v1/overview", timeout=2) as r:
                return dict(json.load(r))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    @property
    def master(self) -> str:
        return f"{HOST}:{self.rest_port}"

    def kill(self, role: str) -> int:
        """SIGKILL one process of this cluster by PID (for recovery tests)."""
        pid = self.pids().get(role)
        if pid is None:
            msg = f"no live {role} in {self.run_dir}"
            raise FlinkUnavailable(msg)
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop this cluster's processes by PID: SIGTERM, then SIGKILL."""
        pids = [
            p
            for d in ("standalonesession", "taskexecutor")
            for p in self._all_pids(d)
            if self._ours(p, d)
        ]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            if _pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        for pid_file in (self.run_dir / "pids").glob("flink-*.pid"):
            pid_file.unlink()


def _java_opts(config: Path) -> str | None:
    """``env.java.opts.all`` of a Flink config.yaml (nested or flat keys), if any."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    if "env.java.opts.all" in data:
        return str(data["env.java.opts.all"])
    node: Any = data
    for key in ("env", "java", "opts", "all"):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return str(node)


def _members(archive: Path, prefixes: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """``(path below the first matching prefix, opener)`` of an archive's files."""
    if archive.name.endswith(".whl"):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                rel = _below(info.filename, prefixes)
                if rel and not info.is_dir():
                    yield rel, functools.partial(z.open, info)
        return
    with tarfile.open(archive, "r:gz") as t:
        for member in t:
            rel = _below(member.name, prefixes)
            if rel and member.isfile():
                yield rel, functools.partial(_extracted, t, member)


def _extracted(t: tarfile.TarFile, member: tarfile.TarInfo) -> Any:
    f = t.extractfile(member)
    assert f is not None
    return f


def _below(name: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


_ENTRY_POINTS = {
    "standalonesession": "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
    "taskexecutor": "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
}


class WorkerPool:
    """A Beam Python SDK worker pool for ``--environment-type EXTERNAL``, on 127.0.0.1.

    A child process of this Python (so it imports this project) serving Beam's
    external worker pool API; each job's SDK harnesses run as threads in it. Started
    and stopped by PID; its log goes to ``log_path``.
    """

    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> str:
        if not _port_free(self.port):
            msg = f"port {self.port} on {HOST} is taken: pick another worker pool port"
            raise FlinkUnavailable(msg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runners.flink", "worker-pool", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                if _accepts(self.port):  # listening, not just bound
                    return self.address
                time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        self.stop()
        msg = f"the worker pool did not come up on {self.address}; log: {self.log_path}"
        raise FlinkUnavailable(msg)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _serve_worker_pool(port: int) -> None:
    """The worker pool's process: Beam's servicer, bound to 127.0.0.1 only (Beam's own
    entry point binds every interface), until terminated."""
    import grpc
    from apache_beam.portability.api import beam_fn_api_pb2_grpc
    from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer
    from apache_beam.utils import thread_pool_executor

    class Servicer(BeamFnExternalWorkerPoolServicer):
        def StartWorker(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
            print(f"starting SDK worker {request.worker_id}", flush=True)
            return super().StartWorker(request, context)

    server = grpc.server(thread_pool_executor.shared_unbounded_instance())
    bound = server.add_insecure_port(f"{HOST}:{port}")
    beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
        Servicer(use_process=False), server
    )
    server.start()
    print(f"worker pool on {HOST}:{bound}", flush=True)
    stop = signal.SIGTERM
    signal.signal(stop, lambda *_: server.stop(0))
    server.wait_for_termination()


STATE_BACKENDS = ("hashmap", "rocksdb")
IDLE_SOURCE_SHUTDOWN_MS = 5000
ENVIRONMENTS = ("LOOPBACK", "EXTERNAL")


@dataclass(frozen=True)
class FlinkSettings:
    """How a pipeline runs on Flink. ``master``: ``[local]`` (an embedded mini-cluster
    in the job server) or ``host:port`` of a cluster's REST endpoint."""

    master: str = "[local]"
    parallelism: int = 1
    checkpointing_interval_ms: int | None = None
    state_backend: str | None = None
    state_backend_path: str | None = None
    environment_type: str = "LOOPBACK"
    environment_config: str | None = None
    job_server_jar: str | None = None

    def __post_init__(self) -> None:
        if self.parallelism <= 0:
            msg = f"parallelism must be > 0, got {self.parallelism!r}"
            raise ValueError(msg)
        if self.checkpointing_interval_ms is not None and self.checkpointing_interval_ms <= 0:
            msg = f"checkpointing interval must be > 0 ms, got {self.checkpointing_interval_ms!r}"
            raise ValueError(msg)
        if self.state_backend is not None and self.state_backend not in STATE_BACKENDS:
            msg = f"state backend must be one of {STATE_BACKENDS}, got {self.state_backend!r}"
            raise ValueError(msg)
        if self.state_backend is not None and not self.state_backend_path:
            msg = f"the {self.state_backend} state backend needs a storage path for checkpoints"
            raise ValueError(msg)
        if self.environment_type not in ENVIRONMENTS:
            msg = f"environment must be one of {ENVIRONMENTS}, got {self.environment_type!r}"
            raise ValueError(msg)
        if self.environment_type == "EXTERNAL" and not self.environment_config:
            raise ValueError("EXTERNAL needs the worker pool's address (host:port)")
        if self.master != "[local]" and (":" not in self.master or self.master.startswith("[")):
            msg = f"master must be [local] or host:port, got {self.master!r}"
            raise ValueError(msg)


def flink_args(settings: FlinkSettings) -> list[str]:
    """FlinkRunner pipeline arguments; resolves the job server (may raise
    :class:`FlinkUnavailable`). A jar passed in ``settings`` is taken to be Beam's
    published one for Flink 2.2."""
    if settings.job_server_jar:
        jar, minor = settings.job_server_jar, FLINK_MINOR
    else:
        chosen = job_server()
        jar, minor = str(chosen.jar), chosen.flink_minor
    return [
        "--runner=FlinkRunner",
        f"--flink_master={settings.master}",
        f"--flink_version={minor}",
        f"--flink_job_server_jar={jar}",
        *(f"--job_server_jvm_property={p}" for p in JAVA17_OPENS),
        *job_args(settings, minor),
    ]


# What older job servers call a state backend: Beam 2.70's runner (Flink 1.19) knows
# Flink's heap backend by its old name.
_BACKEND_NAMES = {jobserver.ASSEMBLED_FLINK_MINOR: {"hashmap": "filesystem"}}


def job_args(settings: FlinkSettings, flink_minor: str = FLINK_MINOR) -> list[str]:
    """The options a Flink job server (for Flink ``flink_minor``) reads from the
    pipeline (parallelism, checkpoints, state backend) and the SDK environment: also
    what PortableRunner passes to a job server at ``--job-endpoint``."""
    args = [
        f"--parallelism={settings.parallelism}",
        f"--environment_type={settings.environment_type}",
    ]
    if settings.environment_config:
        args.append(f"--environment_config={settings.environment_config}")
    if settings.checkpointing_interval_ms is not None:
        args.append(f"--checkpointing_interval={settings.checkpointing_interval_ms}")
        # With checkpoints on, Flink keeps finished sources (our replays and bounded
        # sources end) alive for ever, so the job would never end; they shut down
        # after this long idle instead (no checkpoints are taken after that).
        args.append(f"--shutdown_sources_after_idle_ms={IDLE_SOURCE_SHUTDOWN_MS}")
    if settings.state_backend is not None:
        backend = _BACKEND_NAMES.get(flink_minor, {}).get(settings.state_backend)
        args += [
            f"--state_backend={backend or settings.state_backend}",
            f"--state_backend_storage_path={settings.state_backend_path}",
        ]
    return args


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.flink", description=__doc__.split("\n")[0])
    ap.add_argument("command", choices=["install", "jar", "cluster", "worker-pool"])
    ap.add_argument("action", nargs="?", choices=["start", "stop", "status"])
    ap.add_argument("--run-dir", default=str(cache_dir() / "flink-run"))
    ap.add_argument("--rest-port", type=int, default=8081)
    ap.add_argument("--port", type=int, default=50000, help="worker-pool: its port")
    args = ap.parse_args(argv)
    if args.command == "worker-pool":
        _serve_worker_pool(args.port)
        return 0
    cluster = LocalCluster(Path(args.run_dir), rest_port=args.rest_port)
    try:
        if args.command == "install":
            print(f"Flink {cluster.version} in {cluster.install()}")
        elif args.command == "jar":
            chosen = job_server()
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


if __name__ == "__main__":
    sys.exit(main())
