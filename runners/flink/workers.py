"""A Beam Python worker pool on 127.0.0.1, for ``--environment-type EXTERNAL``.

Beam's own entry point (``worker_pool_main``) binds every interface; :class:`WorkerPool`
starts ``python -m runners.flink worker-pool`` instead, which serves the same API
(:func:`serve`) on 127.0.0.1 only.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from runners.flink.jars import FlinkUnavailable
from runners.processes import HOST, accepts, port_free

# Where ``python -m runners.flink`` resolves: the directory holding the runners package.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
        if not port_free(self.port):
            msg = f"port {self.port} on {HOST} is taken: pick another worker pool port"
            raise FlinkUnavailable(msg)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runners.flink", "worker-pool", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=_PROJECT_ROOT,
            )
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.process.poll() is None:
                if accepts(self.port):  # listening, not just bound
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


def serve(port: int) -> None:
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
