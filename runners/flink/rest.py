"""Flink's own figures for a job, read from a cluster's REST API while it runs.

:class:`JobWatch` polls a standalone cluster (``--flink-master host:port``) in a
thread while a pipeline runs on it: the job it finds (the newest one started after
the watch began), every vertex's backpressure (the largest ratio any subtask showed,
``/jobs/:id/vertices/:v/backpressure``), the job's restarts, and when it stops, the
checkpoint figures (``/jobs/:id/checkpoints``: completed, failed, restored, the last
one's end-to-end duration and size, the largest duration). An embedded mini-cluster
is watched at the REST endpoint :mod:`runners.flink.settings` gives it.

A live job runs until it is stopped: :func:`stop_with_savepoint` stops one (Flink's
``POST /jobs/:id/stop``), with a savepoint to resume from, and the watch stops its job
that way, draining it (the last windows fire), once ``drain_when`` says its input is
over.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_ENDED = ("FINISHED", "FAILED", "CANCELED")
DRAIN_TRIES = 3
_GONE_S = 3.0  # an endpoint silent this long after a stop: the job has stopped


class SavepointFailed(RuntimeError):
    """Flink could not take the savepoint (its answer says why); the job runs on."""


def _get(url: str, timeout_s: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _post(url: str, body: dict[str, Any], timeout_s: float = 10.0) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as r:
            return json.load(r)
    except urllib.error.HTTPError as err:
        raise SavepointFailed(f"{url}: {err.code} {err.read().decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise SavepointFailed(f"{url}: {err}") from None


def running_jobs(rest_url: str) -> list[str]:
    """The ids of the cluster's running jobs, the newest first."""
    jobs = (_get(f"{rest_url}/jobs/overview") or {}).get("jobs", [])
    running = [j for j in jobs if j.get("state") == "RUNNING"]
    return [j["jid"] for j in sorted(running, key=lambda j: -int(j.get("start-time", 0)))]


def stop_with_savepoint(
    rest_url: str,
    job_id: str,
    directory: str,
    *,
    drain: bool = False,
    timeout_s: float = 120.0,
    ended: Callable[[], bool] | None = None,
) -> str:
    """Stop the job with a savepoint in ``directory``; its path. ``drain``: the sources
    first send the watermark to the end of time, so every window fires (a job to end);
    without: the job stops where it is, its windows in the savepoint (a job to resume
    with ``--savepoint``). :class:`SavepointFailed` when Flink cannot take it. An
    endpoint that stops answering once the stop is under way (an embedded mini-cluster
    ends with its job), or ``ended()``, means the job has stopped: the path is then
    ``directory``, the savepoint's own folder inside it."""
    base = f"{rest_url.rstrip('/')}/jobs/{job_id}"
    answer = _post(f"{base}/stop", {"targetDirectory": directory, "drain": drain})
    trigger = answer.get("request-id")
    deadline = time.monotonic() + timeout_s
    silent_since = None
    while time.monotonic() < deadline:
        status = _get(f"{base}/savepoints/{trigger}")
        if status is None:
            silent_since = silent_since or time.monotonic()
            if time.monotonic() - silent_since > _GONE_S:
                return directory
        elif (status.get("status") or {}).get("id") == "COMPLETED":
            operation = status.get("operation") or {}
            if "location" in operation:
                return str(operation["location"])
            cause = (operation.get("failure-cause") or {}).get("stack-trace", "")
            first = next(iter(cause.strip().splitlines()), "no reason given")
            raise SavepointFailed(f"job {job_id}: {first}")
        else:
            silent_since = None
        if ended is not None and ended():
            return directory
        time.sleep(0.2)
    raise SavepointFailed(f"job {job_id}: no savepoint within {timeout_s:.0f} s")


def cancel(rest_url: str, job_id: str) -> None:
    """Cancel the job (``PATCH /jobs/:id?mode=cancel``); quiet when it has ended."""
    request = urllib.request.Request(f"{rest_url}/jobs/{job_id}?mode=cancel", method="PATCH")
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except (urllib.error.URLError, OSError):
        pass


@dataclass
class JobFigures:
    """What Flink said about one job (see the module docstring)."""

    job_id: str
    name: str = ""
    state: str = ""
    restarts: int = 0
    checkpoints_completed: int = 0
    checkpoints_failed: int = 0
    restored: int = 0
    last_checkpoint_ms: int | None = None
    last_checkpoint_bytes: int | None = None
    max_checkpoint_ms: int | None = None
    last_savepoint: str | None = None  # where the newest savepoint of the job is
    # a job that runs until stopped, stopped from outside: its savepoint, to resume from
    stopped_with: str | None = None
    backpressure: dict[str, float] = field(default_factory=dict)  # vertex -> max ratio

    def lines(self) -> list[str]:
        last = (
            "none completed"
            if self.last_checkpoint_ms is None
            else f"last {self.last_checkpoint_ms} ms, {self.last_checkpoint_bytes or 0:,} bytes;"
            f" longest {self.max_checkpoint_ms} ms"
        )
        worst = max(self.backpressure.items(), key=lambda kv: kv[1], default=None)
        pressure = "not sampled" if worst is None else f"{worst[1]:.2f} ({worst[0][:60]})"
        return [
            f"flink job        {self.job_id}  ({self.state}, {self.restarts} restarts)",
            f"checkpoints      {self.checkpoints_completed:>12,}  completed, "
            f"{self.checkpoints_failed} failed, {self.restored} restored; {last}",
            f"backpressure     {pressure}  (the busiest vertex's largest ratio)",
        ]


class JobWatch:
    """Polls ``rest_url`` every ``interval_s`` for the job started after the watch;
    drains it once ``drain_when(since)`` is true, ``since`` being when it last saw the
    job restart (what the input said before a restore is old; see the module
    docstring). A job that ``runs_until_stopped`` (a live read whose sources are kept)
    and ends without that drain was stopped from outside: its figures say with which
    savepoint."""

    def __init__(
        self,
        rest_url: str,
        interval_s: float = 1.0,
        drain_when: Callable[[float], bool] | None = None,
        runs_until_stopped: bool = False,
    ) -> None:
        self._url = rest_url.rstrip("/")
        self._until_stopped = runs_until_stopped
        self._interval = interval_s
        self._drain_when = drain_when
        self.drained: str | None = None  # what became of the drain, when asked
        self._tries = 0
        self._restarted_at = 0.0  # when a restart was last seen (wall time)
        self._since_ms = int(time.time() * 1000) - 1000
        self._stop = threading.Event()
        self._figures: JobFigures | None = None
        self._vertices: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="flink-rest-watch", daemon=True)

    def start(self) -> JobWatch:
        self._thread.start()
        return self

    def stop(self) -> JobFigures | None:
        """Stop polling; the job's figures (None: no job of ours was seen)."""
        self._stop.set()
        self._thread.join(timeout=20)  # (a drain in progress returns once stopped)
        if self._figures is not None:  # the final state and checkpoint figures
            deadline = time.monotonic() + 10  # the job ends a moment after its result
            reached = self._poll_job(self._figures)
            while reached and self._figures.state not in _ENDED and time.monotonic() < deadline:
                time.sleep(0.2)
                reached = self._poll_job(self._figures)
            figures = self._figures
            if self._until_stopped and self.drained is None and figures.state == "FINISHED":
                # Flink caches its checkpoint statistics for a few seconds: the savepoint
                # that stopped the job may show only after them
                deadline = time.monotonic() + 6
                while figures.last_savepoint is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                    if not self._poll_job(figures):
                        break
                figures.stopped_with = figures.last_savepoint or "a savepoint"
        return self._figures

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._figures is None:
                self._figures = self._find_job()
            if self._figures is not None:
                self._poll_job(self._figures)
                self._poll_backpressure(self._figures)
                self._drain(self._figures)

    def _drain(self, figures: JobFigures) -> None:
        """Drain the job once its input is over; after a third failed savepoint,
        cancel it (its last windows unfired) rather than let it run for ever."""
        if self._drain_when is None or self.drained == "drained" or figures.state != "RUNNING":
            return
        if self._tries >= DRAIN_TRIES or not self._drain_when(self._restarted_at):
            return
        self._tries += 1
        directory = tempfile.mkdtemp(prefix="sml-drain-")
        try:  # the savepoint only ends the job: it is not kept
            stop_with_savepoint(
                self._url,
                figures.job_id,
                f"file://{directory}",
                drain=True,
                ended=self._stop.is_set,  # the run saw its job end
            )
            self.drained = "drained"
        except SavepointFailed as err:
            self.drained = f"not drained ({err})"
            if self._tries == DRAIN_TRIES:
                cancel(self._url, figures.job_id)
                self.drained += "; cancelled"
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    def _find_job(self) -> JobFigures | None:
        jobs = (_get(f"{self._url}/jobs/overview") or {}).get("jobs", [])
        ours = [j for j in jobs if int(j.get("start-time", 0)) >= self._since_ms]
        if not ours:
            return None
        job = max(ours, key=lambda j: int(j["start-time"]))
        return JobFigures(job_id=job["jid"], name=job.get("name", ""))

    def _poll_job(self, figures: JobFigures) -> bool:
        """Update the figures; False when the endpoint did not answer (a mini-cluster
        is gone with its job)."""
        base = f"{self._url}/jobs/{figures.job_id}"
        details = _get(base)
        if details is None:
            return False
        if details:
            figures.state = details.get("state", figures.state)
            self._vertices = {v["id"]: v["name"] for v in details.get("vertices", [])}
        restarts = _get(f"{base}/metrics?get=numRestarts") or []
        for metric in restarts:
            if metric.get("id") == "numRestarts":
                restarts = int(float(metric.get("value", 0)))
                if restarts > figures.restarts:
                    self._restarted_at = time.time()  # what the input said before is old
                figures.restarts = max(figures.restarts, restarts)
        checkpoints = _get(f"{base}/checkpoints")
        if not checkpoints:
            return True
        counts = checkpoints.get("counts", {})
        figures.checkpoints_completed = int(counts.get("completed", 0))
        figures.checkpoints_failed = int(counts.get("failed", 0))
        figures.restored = int(counts.get("restored", 0))
        savepoint = (checkpoints.get("latest") or {}).get("savepoint") or {}
        if savepoint.get("external_path"):
            figures.last_savepoint = str(savepoint["external_path"])
        latest = (checkpoints.get("latest") or {}).get("completed") or {}
        if latest:
            figures.last_checkpoint_ms = int(latest.get("end_to_end_duration", 0))
            size = latest.get("checkpointed_size", latest.get("state_size", 0))
            figures.last_checkpoint_bytes = int(size or 0)
        longest = ((checkpoints.get("summary") or {}).get("end_to_end_duration") or {}).get("max")
        if longest is not None:
            figures.max_checkpoint_ms = int(longest)
        return True

    def _poll_backpressure(self, figures: JobFigures) -> None:
        for vertex, name in self._vertices.items():
            answer = _get(f"{self._url}/jobs/{figures.job_id}/vertices/{vertex}/backpressure")
            if not answer or answer.get("status") != "ok":
                continue  # the first request starts sampling; later ones read it
            ratios = [float(s.get("ratio", 0.0)) for s in answer.get("subtasks", [])]
            if ratios:
                figures.backpressure[name] = max(figures.backpressure.get(name, 0.0), *ratios)
