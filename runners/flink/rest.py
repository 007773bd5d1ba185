"""Flink's own figures for a job, read from a cluster's REST API while it runs.

:class:`JobWatch` polls a standalone cluster (``--flink-master host:port``) in a
thread while a pipeline runs on it: the job it finds (the newest one started after
the watch began), every vertex's backpressure (the largest ratio any subtask showed,
``/jobs/:id/vertices/:v/backpressure``), the job's restarts, and when it stops, the
checkpoint figures (``/jobs/:id/checkpoints``: completed, failed, restored, the last
one's end-to-end duration and size, the largest duration). An embedded mini-cluster
(``[local]``) has no REST endpoint to read: nothing is watched there.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

_ENDED = ("FINISHED", "FAILED", "CANCELED")


def _get(url: str, timeout_s: float = 2.0) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return json.load(r)
    except (urllib.error.URLError, OSError, ValueError):
        return None


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
    """Polls ``rest_url`` every ``interval_s`` for the job started after the watch."""

    def __init__(self, rest_url: str, interval_s: float = 1.0) -> None:
        self._url = rest_url.rstrip("/")
        self._interval = interval_s
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
        self._thread.join(timeout=10)
        if self._figures is not None:  # the final state and checkpoint figures
            deadline = time.monotonic() + 10  # the job ends a moment after its result
            self._poll_job(self._figures)
            while self._figures.state not in _ENDED and time.monotonic() < deadline:
                time.sleep(0.2)
                self._poll_job(self._figures)
        return self._figures

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._figures is None:
                self._figures = self._find_job()
            if self._figures is not None:
                self._poll_job(self._figures)
                self._poll_backpressure(self._figures)

    def _find_job(self) -> JobFigures | None:
        jobs = (_get(f"{self._url}/jobs/overview") or {}).get("jobs", [])
        ours = [j for j in jobs if int(j.get("start-time", 0)) >= self._since_ms]
        if not ours:
            return None
        job = max(ours, key=lambda j: int(j["start-time"]))
        return JobFigures(job_id=job["jid"], name=job.get("name", ""))

    def _poll_job(self, figures: JobFigures) -> None:
        base = f"{self._url}/jobs/{figures.job_id}"
        details = _get(base)
        if details:
            figures.state = details.get("state", figures.state)
            self._vertices = {v["id"]: v["name"] for v in details.get("vertices", [])}
        restarts = _get(f"{base}/metrics?get=numRestarts") or []
        for metric in restarts:
            if metric.get("id") == "numRestarts":
                figures.restarts = max(figures.restarts, int(float(metric.get("value", 0))))
        checkpoints = _get(f"{base}/checkpoints")
        if not checkpoints:
            return
        counts = checkpoints.get("counts", {})
        figures.checkpoints_completed = int(counts.get("completed", 0))
        figures.checkpoints_failed = int(counts.get("failed", 0))
        figures.restored = int(counts.get("restored", 0))
        latest = (checkpoints.get("latest") or {}).get("completed") or {}
        if latest:
            figures.last_checkpoint_ms = int(latest.get("end_to_end_duration", 0))
            size = latest.get("checkpointed_size", latest.get("state_size", 0))
            figures.last_checkpoint_bytes = int(size or 0)
        longest = ((checkpoints.get("summary") or {}).get("end_to_end_duration") or {}).get("max")
        if longest is not None:
            figures.max_checkpoint_ms = int(longest)

    def _poll_backpressure(self, figures: JobFigures) -> None:
        for vertex, name in self._vertices.items():
            answer = _get(f"{self._url}/jobs/{figures.job_id}/vertices/{vertex}/backpressure")
            if not answer or answer.get("status") != "ok":
                continue  # the first request starts sampling; later ones read it
            ratios = [float(s.get("ratio", 0.0)) for s in answer.get("subtasks", [])]
            if ratios:
                figures.backpressure[name] = max(figures.backpressure.get(name, 0.0), *ratios)
