"""A local standalone Flink cluster, assembled from PyPI and run on 127.0.0.1.

:class:`LocalCluster` assembles a standalone Flink from the PyPI wheels
``apache-flink-libraries`` (``lib/``, ``opt/``, ``plugins/``) and ``apache-flink``
(``bin/``, ``conf/``), downloaded with ``--no-deps`` and unpacked, never installed next
to Beam; binds the JobManager, TaskManager and REST endpoint to 127.0.0.1; starts both
processes with Flink's own scripts, keeps their PIDs and logs in its run directory and
stops them by PID. Its Flink release is the one the job server submits to
(:func:`runners.flink.jars.cluster_version`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
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
from runners.flink import jars
from runners.flink.jars import FlinkUnavailable
from runners.processes import HOST, pid_alive, port_free, runs_with, terminate

RESOURCE_ID = "taskmanager-"  # + a number: the TaskManagers' ids


@dataclass
class LocalCluster:
    """A standalone Flink session cluster on this machine (see the module docstring)."""

    run_dir: Path
    rest_port: int = 8081
    slots: int = 2
    # TaskManagers beyond the first: spare slots a restart takes at once (a job's slots
    # are spread over all of them, so none is idle; see _conf_dir)
    standby: int = 0
    version: str = ""  # default: the release the job server submits to (cluster_version)
    home: Path = field(init=False)
    _started: int = field(init=False, default=0)  # TaskManagers started, for their ids

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.version = self.version or jars.cluster_version()
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
            # one machine: a TaskManager whose heartbeat finds no process is dead (one
            # refused heartbeat, within 1 s); one that stops answering, after 10 s, not
            # Flink's default 50 s. The job then restarts after 0.1 s, backing off
            # while it fails again (no slots yet), not after the default 1 s.
            "heartbeat.interval": 1000,
            "heartbeat.timeout": 10000,
            "heartbeat.rpc-failure-threshold": 1,
            "restart-strategy.type": "exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff": "100 ms",
            "restart-strategy.exponential-delay.max-backoff": "5 s",
            # a job's slots spread over the TaskManagers: with a standby, a restart
            # after one is lost runs on one that holds the job's code loaded (Flink
            # keeps a job's class loader while it holds a slot there), not a cold one
            "taskmanager.load-balance.mode": "SLOTS",
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
        return runs_with(pid, _ENTRY_POINTS[daemon], str(self.run_dir / "conf"))

    def start(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Start the JobManager, one TaskManager and ``standby`` more; wait until they
        have registered. Returns the REST overview."""
        if self.pids():
            msg = f"a cluster already runs from {self.run_dir}: {self.pids()}"
            raise FlinkUnavailable(msg)
        if self.status() is not None or not port_free(self.rest_port):
            msg = f"port {self.rest_port} on {HOST} is taken: pass another --rest-port"
            raise FlinkUnavailable(msg)
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise FlinkUnavailable("Flink needs Java: no java on PATH and no JAVA_HOME")
        self.install()
        self._conf_dir()
        self._daemon("jobmanager.sh")
        for _ in range(1 + self.standby):
            self._daemon("taskmanager.sh", *self._next_taskmanager())
        return self.wait_for_taskmanagers(1 + self.standby, timeout_s)

    def _next_taskmanager(self) -> tuple[str, str]:
        """Arguments that name the next TaskManager (its id in Flink's REST answers
        and on its command line: :meth:`kill` finds a busy one's PID by it): a number
        past those of this run directory's running TaskManagers, whoever started them."""
        prefix = f"taskmanager.resource-id={RESOURCE_ID}"
        for pid in self._all_pids("taskexecutor"):
            if not self._ours(pid, "taskexecutor"):
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            for arg in argv.split("\0"):
                if arg.startswith(prefix) and arg[len(prefix) :].isdigit():
                    self._started = max(self._started, int(arg[len(prefix) :]))
        self._started += 1
        return "-D", f"{prefix}{self._started}"

    def start_taskmanager(self) -> int:
        """Start one more TaskManager (e.g. after one was killed); its PID, once that
        process runs the TaskManager (the start script writes the PID of a shell that
        only then becomes the JVM)."""
        before = set(self._all_pids("taskexecutor"))
        self._daemon("taskmanager.sh", *self._next_taskmanager())
        deadline = time.monotonic() + 30
        while True:
            new = [p for p in self._all_pids("taskexecutor") if p not in before]
            ours = [p for p in new if self._ours(p, "taskexecutor")]
            if ours:
                return ours[-1]
            if not any(pid_alive(p) for p in new) or time.monotonic() > deadline:
                raise FlinkUnavailable("the new TaskManager did not start")
            time.sleep(0.05)

    def _daemon(self, script: str, *args: str) -> None:
        conf = self.run_dir / "conf"
        done = subprocess.run(
            ["bash", str(self.home / "bin" / script), "start", *args],
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
        """SIGKILL one process of this cluster by PID (for recovery tests): the
        JobManager, or a TaskManager that runs tasks (when one does)."""
        pid = self._busy_taskmanager() if role == "taskmanager" else None
        pid = pid or self.pids().get(role)
        if pid is None:
            msg = f"no live {role} in {self.run_dir}"
            raise FlinkUnavailable(msg)
        os.kill(pid, signal.SIGKILL)
        return pid

    def _busy_taskmanager(self) -> int | None:
        """The PID of a TaskManager with a slot in use (None: none is, or the REST
        endpoint does not answer)."""
        try:
            with urllib.request.urlopen(self.rest_url + "/taskmanagers", timeout=2) as r:
                managers = json.load(r).get("taskmanagers", [])
        except (urllib.error.URLError, OSError, ValueError):
            return None
        busy = {m["id"] for m in managers if m.get("freeSlots", 0) < m.get("slotsNumber", 0)}
        for pid in self._all_pids("taskexecutor"):
            for name in busy:
                if self._ours(pid, "taskexecutor") and runs_with(
                    pid, f"taskmanager.resource-id={name}"
                ):
                    return pid
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop this cluster's processes by PID: SIGTERM, then SIGKILL."""
        pids = [
            p
            for d in ("standalonesession", "taskexecutor")
            for p in self._all_pids(d)
            if self._ours(p, d)
        ]
        terminate(pids, timeout_s)
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


_ENTRY_POINTS = {
    "standalonesession": "org.apache.flink.runtime.entrypoint.StandaloneSessionClusterEntrypoint",
    "taskexecutor": "org.apache.flink.runtime.taskexecutor.TaskManagerRunner",
}
