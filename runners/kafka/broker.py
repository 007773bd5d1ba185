"""A local Apache Kafka broker (KRaft, no ZooKeeper), assembled from Maven Central.

:class:`LocalBroker` resolves ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies with Maven into ``$SML_CACHE/kafka-<version>/lib`` (once; about 45 MB),
as :mod:`runners.flink.jobserver` assembles the Flink job server; writes a one-node
configuration (broker and controller in one process) bound to 127.0.0.1 in its run
directory; formats its storage once; starts ``kafka.Kafka`` with ``java``, keeps the
PID and the logs in the run directory, and stops it by PID.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from model.cache_dir import cache_dir
from model.streams.topics import TopicError, topics_of
from runners.processes import HOST, accepts, port_free, runs_with, terminate
from runners.tools import maven_dependencies, maven_dependency, maven_project, run_tool

KAFKA_VERSION = "4.1.1"
LOG4J_VERSION = "2.24.3"
SLF4J_VERSION = "2.0.16"
MAIN = "kafka.Kafka"


class KafkaUnavailable(RuntimeError):
    """The broker cannot be assembled or started here (the message says why)."""


def pom(version: str = KAFKA_VERSION) -> str:
    """The Maven project whose runtime dependencies are the broker (and a log4j2
    binding for its logs)."""

    return maven_project(
        "kafka-broker",
        [
            maven_dependency("org.apache.kafka", "kafka_2.13", version),
            maven_dependency("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
            maven_dependency("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
            maven_dependency("org.slf4j", "slf4j-api", SLF4J_VERSION),
        ],
    )


def install(version: str = KAFKA_VERSION, timeout_s: float = 900.0) -> Path:
    """The broker's libraries (``<cache>/kafka-<version>/lib``), resolved first if
    missing; idempotent, and safe against a concurrent install."""
    home = cache_dir() / f"kafka-{version}"
    lib = home / "lib"
    if (home / ".assembled").is_file():
        return lib
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            msg = f"the Kafka broker needs {tool} on PATH"
            raise KafkaUnavailable(msg)
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(pom(version))
    partial = home / f"lib.part{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    maven_dependencies(
        home / "pom.xml", partial, f"resolving Kafka {version}", timeout_s, KafkaUnavailable
    )
    shutil.rmtree(lib, ignore_errors=True)
    os.replace(partial, lib)
    (home / ".assembled").write_text(version)
    return lib


@dataclass
class LocalBroker:
    """One Kafka node (broker and KRaft controller) on 127.0.0.1; see the module
    docstring. Its data, logs, configuration and PID file live in ``run_dir``."""

    run_dir: Path
    port: int = 9092
    controller_port: int = 9093
    version: str = KAFKA_VERSION
    heap: str = "512m"
    pid_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.pid_file = self.run_dir / "kafka.pid"

    @property
    def bootstrap(self) -> str:
        """The address clients bootstrap from."""
        return f"{HOST}:{self.port}"

    def _config(self) -> Path:
        data = self.run_dir / "data"
        settings = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": 1,
            # one node: every internal topic (offsets, transactions, shares) has one replica
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
        }
        config = self.run_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        log_dir = self.run_dir / "log"
        log_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "log4j2.properties").write_text(
            "appender.file.type = File\n"
            "appender.file.name = file\n"
            f"appender.file.fileName = {log_dir / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = file\n"
        )
        return config

    def _java(self, lib: Path, *args: str) -> list[str]:
        java = (
            os.path.join(os.environ["JAVA_HOME"], "bin", "java")
            if os.environ.get("JAVA_HOME")
            else "java"
        )
        logging = f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.properties'}"
        return [java, f"-Xmx{self.heap}", logging, "-cp", f"{lib}/*", *args]

    def pid(self) -> int | None:
        """The PID of this broker's live process, or None: the PID file's, when that
        process runs Kafka with this run directory's configuration (a PID file can
        outlive its process, and the PID can since belong to someone else)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if runs_with(pid, MAIN, str(self.run_dir / "server.properties")) else None

    def start(self, timeout_s: float = 90.0) -> int:
        """Start the broker (its storage formatted the first time) and wait until it
        answers clients; its PID."""
        if self.pid() is not None:
            msg = f"a broker already runs from {self.run_dir} (PID {self.pid()})"
            raise KafkaUnavailable(msg)
        for port in (self.port, self.controller_port):
            if not port_free(port):
                msg = f"port {port} on {HOST} is taken: choose another (--port, --controller-port)"
                raise KafkaUnavailable(msg)
        lib = install(self.version)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        config = self._config()
        if not (self.run_dir / "data" / "meta.properties").is_file():
            cmd = self._java(lib, "kafka.tools.StorageTool", "format",
                             f"--cluster-id={_cluster_id()}", f"--config={config}",
                             "--standalone")  # fmt: skip
            run_tool(cmd, "formatting the broker's storage", 120.0, KafkaUnavailable)
        log = open(self.run_dir / "log" / "stdout.log", "ab")  # noqa: SIM115 (the child holds it)
        with log:
            process = subprocess.Popen(
                self._java(lib, MAIN, str(config)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C of the caller does not reach it
            )
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if accepts(self.port) and _topics(self.bootstrap) is not None:
                return process.pid
            time.sleep(0.2)
        self.stop()
        tail = _tail(self.run_dir / "log" / "server.log") or _tail(
            self.run_dir / "log" / "stdout.log"
        )
        msg = f"the Kafka broker did not answer on {self.bootstrap} within {timeout_s:.0f}s: {tail}"
        raise KafkaUnavailable(msg)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker by PID: SIGTERM (a clean shutdown), then SIGKILL."""
        pid = self.pid()
        if pid is not None:
            terminate([pid], timeout_s)
        self.pid_file.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        """PID, address and topics (None while it does not answer)."""
        pid = self.pid()
        topics = _topics(self.bootstrap) if pid is not None else None
        return {"pid": pid, "bootstrap": self.bootstrap, "topics": topics}


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _topics(bootstrap: str) -> dict[str, int] | None:
    """Topic names and their partition counts, or None when the broker does not
    answer within two seconds."""
    try:
        return topics_of(bootstrap, timeout_s=2)
    except TopicError:
        return None


def _tail(path: Path, size: int = 800) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""
