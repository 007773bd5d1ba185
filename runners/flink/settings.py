"""How a pipeline runs on Flink: :class:`FlinkSettings`, and the pipeline arguments.

:func:`flink_args` turns our options (master, parallelism, checkpointing, state
backend, SDK environment) into FlinkRunner pipeline arguments, resolving the job
server (:mod:`runners.flink.jars`); :func:`job_args` is the part a job server reads
from the pipeline, also what PortableRunner passes to one at ``--job-endpoint``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runners.flink import jars, jobserver
from runners.flink.jars import FLINK_MINOR
from runners.processes import HOST, free_port

# Beam's own tests start the job server with these on Java 17; Flink's (Kryo) state
# serialization of side inputs needs java.util open too.
JAVA17_OPENS = (
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
)

STATE_BACKENDS = ("hashmap", "rocksdb")
IDLE_SOURCE_SHUTDOWN_MS = 5000
# A live read's bundles: a prediction is committed to its sinks when its bundle ends
# (Beam's default, 1 s, puts that second into every event's latency)
LIVE_BUNDLE_MS = 250
ENVIRONMENTS = ("LOOPBACK", "EXTERNAL")


@dataclass(frozen=True)
class FlinkSettings:
    """How a pipeline runs on Flink. ``master``: ``[local]`` (an embedded mini-cluster
    in the job server) or ``host:port`` of a cluster's REST endpoint.

    ``local_rest_port``: the mini-cluster's REST endpoint (on 127.0.0.1; None: Flink
    picks a port on every interface, and nothing reads it). ``live``: the job reads a
    live source: with checkpointing on, its sources are never shut down when idle (a
    source that ends stops every checkpoint after it: the tasks downstream of it are
    finishing, and a finishing task takes none), so the job runs until it is stopped
    (:class:`runners.flink.rest.JobWatch` drains it once the read is over); its bundles
    last at most :data:`LIVE_BUNDLE_MS`.
    ``savepoint_path``: a savepoint (or retained checkpoint) the job starts from."""

    master: str = "[local]"
    parallelism: int = 1
    checkpointing_interval_ms: int | None = None
    state_backend: str | None = None
    state_backend_path: str | None = None
    environment_type: str = "LOOPBACK"
    environment_config: str | None = None
    job_server_jar: str | None = None
    local_rest_port: int | None = None
    live: bool = False
    savepoint_path: str | None = None

    def for_run(self, live: bool) -> FlinkSettings:
        """These settings for one run: a mini-cluster's REST endpoint on a free port of
        127.0.0.1 (Flink's own figures, and a live job's drain, come from there);
        whether the job reads a live source; and, checkpointed on this machine with no
        state backend chosen, checkpoints in files of a temporary folder (Flink's
        default keeps them in the JobManager's memory, refusing a task's state over
        5 MB: a job then fails every checkpoint and restarts for ever)."""
        port = self.local_rest_port
        if self.master == "[local]" and port is None:
            port = free_port()
        backend, path = self.state_backend, self.state_backend_path
        here = self.master == "[local]" or self.master.split(":")[0] in (HOST, "localhost")
        if self.checkpointing_interval_ms is not None and backend is None and here:
            backend, path = "hashmap", Path(tempfile.mkdtemp(prefix="sml-checkpoints-")).as_uri()
        return dataclasses.replace(
            self,
            local_rest_port=port,
            live=self.live or live,
            state_backend=backend,
            state_backend_path=path,
        )

    @property
    def keeps_sources(self) -> bool:
        """The job's sources are never shut down (a live read, checkpointed): it runs
        until it is stopped."""
        return self.live and self.checkpointing_interval_ms is not None

    @property
    def rest_url(self) -> str | None:
        """The cluster's REST endpoint, where one is known."""
        if self.master != "[local]":
            return f"http://{self.master}"
        return None if self.local_rest_port is None else f"http://{HOST}:{self.local_rest_port}"

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
        chosen = jars.job_server()
        jar, minor = str(chosen.jar), chosen.flink_minor
    args = [
        "--runner=FlinkRunner",
        f"--flink_master={settings.master}",
        f"--flink_version={minor}",
        f"--flink_job_server_jar={jar}",
        *(f"--job_server_jvm_property={p}" for p in JAVA17_OPENS),
        *job_args(settings, minor),
    ]
    if settings.master == "[local]" and settings.local_rest_port is not None:
        args.append(f"--flink_conf_dir={local_conf_dir(settings.local_rest_port)}")
    return args


def local_conf_dir(rest_port: int) -> Path:
    """A Flink configuration for the job server's embedded mini-cluster: everything
    bound to 127.0.0.1 (Flink's defaults bind its REST endpoint and blob server to every
    interface), its REST endpoint at ``rest_port``."""
    conf = Path(tempfile.gettempdir()) / "sml-flink-conf" / str(rest_port)
    conf.mkdir(parents=True, exist_ok=True)
    settings = {
        "rest.address": HOST,
        "rest.bind-address": HOST,
        "rest.port": rest_port,
        "rest.bind-port": str(rest_port),
        "jobmanager.rpc.address": HOST,
        "jobmanager.bind-host": HOST,
        "taskmanager.host": HOST,
        "taskmanager.bind-host": HOST,
    }
    lines = [f"{k}: {json.dumps(v) if isinstance(v, str) else v}" for k, v in settings.items()]
    (conf / "config.yaml").write_text("\n".join(lines) + "\n")
    return conf


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
        if not settings.keeps_sources:
            # With checkpoints on, Beam keeps sources (our replays and bounded reads
            # end) alive for ever, so the job would never end; they shut down after
            # this long idle instead (no checkpoint completes after that). A live
            # read keeps them (see FlinkSettings).
            args.append(f"--shutdown_sources_after_idle_ms={IDLE_SOURCE_SHUTDOWN_MS}")
        # Finish the bundle (and send the watermark on) at each checkpoint: otherwise a
        # splittable read that resumes at once (Flink keeps whole seconds of its
        # resume delay: none) starts its next bundle before the runner's scheduled
        # watermark update, the read's watermark never moves and no window fires;
        # and outputs of the bundle a checkpoint cut would wait in operator state.
        args.append("--finish_bundle_before_checkpointing")
    if settings.live:
        args.append(f"--max_bundle_time_mills={LIVE_BUNDLE_MS}")
    if settings.savepoint_path is not None:
        args.append(f"--savepoint_path={settings.savepoint_path}")
    if settings.state_backend is not None:
        backend = _BACKEND_NAMES.get(flink_minor, {}).get(settings.state_backend)
        args += [
            f"--state_backend={backend or settings.state_backend}",
            f"--state_backend_storage_path={settings.state_backend_path}",
        ]
    return args
