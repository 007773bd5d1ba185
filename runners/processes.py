"""The processes we start (Flink's daemons, a worker pool, the Kafka broker): on 127.0.0.1,
watched and stopped by PID."""

from __future__ import annotations

import os
import socket
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
