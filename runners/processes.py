"""The processes we start (Flink's daemons, a worker pool, the Kafka broker): on 127.0.0.1,
watched and stopped by PID."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

HOST = "127.0.0.1"


def pid_alive(pid: int) -> bool:
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


def runs_with(pid: int, *args: str) -> bool:
    """True while ``pid`` runs with each of ``args`` among its command-line arguments:
    a PID file can outlive its process, and the PID can since belong to someone else."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(a.encode() in argv for a in args)


def terminate(pids: list[int], timeout_s: float = 30.0) -> None:
    """Stop processes by PID: SIGTERM (a clean shutdown), then SIGKILL for those still
    running after ``timeout_s``."""
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if pid_alive(pid):
            send_signal(pid, signal.SIGKILL)


def send_signal(pid: int, sig: int) -> None:
    """Signal ``pid``; nothing when it is gone or not ours to signal."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def accepts(port: int) -> bool:
    """Whether something listens on ``port`` of :data:`HOST` (not just bound it)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def port_free(port: int) -> bool:
    """Whether ``port`` of :data:`HOST` can be bound now."""
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port of :data:`HOST` nothing listens on now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])
