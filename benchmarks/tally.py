"""A process-wide tally for benchmark DoFns (imported by reference, so every DoFn copy
the local runners make adds to the same numbers)."""

from __future__ import annotations

import threading

_LOCK = threading.Lock()
_COUNTS: dict[str, int] = {}


def add(name: str, value: int) -> None:
    with _LOCK:
        _COUNTS[name] = _COUNTS.get(name, 0) + value


def take(name: str) -> int:
    """The tally so far, reset to zero."""
    with _LOCK:
        return _COUNTS.pop(name, 0)
