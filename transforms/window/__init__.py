"""Event-time windows on micro-batches: specs, the windowing transform, lateness, stats."""

from transforms.window.lateness import Verdict
from transforms.window.spec import BatchSessions, TriggerSpec, WindowKind, WindowSpec, cell_ids
from transforms.window.stats import WindowStats
from transforms.window.windowing import EventTimeWindow, WindowOut, split_batch

__all__ = [
    "BatchSessions",
    "EventTimeWindow",
    "TriggerSpec",
    "Verdict",
    "WindowKind",
    "WindowOut",
    "WindowSpec",
    "WindowStats",
    "cell_ids",
    "split_batch",
]
