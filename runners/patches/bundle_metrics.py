"""Every bundle's user metrics reach the result, not only a thread's first bundle's.

The streaming BundleBasedDirectRunner makes a fresh ``MetricsContainer`` for each
bundle, hands it to its worker thread's ``StateSampler.scoped_state`` and, once the
bundle is done, commits that container's cumulative values. But the sampler caches
its scoped states by step and state name, so from the second bundle a thread runs
of a step on, ``scoped_state`` returns the first bundle's state with the first
bundle's container: counters and distributions that DoFns update land there, after
it was committed, and are never reported (a DoFn counting 100 elements in 10 bundles
reports 10). Here the executor gets one container per worker thread and step, reset
at the start of each bundle: the very container the cached state holds, so every
bundle's updates are in what the executor commits, and nothing new is made per
bundle (the containers are as many as threads times steps).

Unlike the other patches this one changes a result: the metrics become right. The
summary's memory-control lines read them (``pipelines.summary.memory_figures``).

Written for Beam 2.77.0; serves the streaming runner (the FnApiRunner's workers keep
one container per step and reset it per bundle, as this does).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})
_CONTAINERS: dict[tuple[int, str], Any] = {}
_LOCK = threading.Lock()


def containers_made() -> int:
    """How many containers the patched executor holds (threads x steps)."""
    return len(_CONTAINERS)


def _per_thread(original: Callable[[str], Any]) -> Callable[[str], Any]:
    def metrics_container(step_name: str) -> Any:
        key = (threading.get_ident(), step_name)
        with _LOCK:
            container = _CONTAINERS.get(key)
            if container is None:
                container = _CONTAINERS[key] = original(step_name)
        container.reset()  # this bundle's updates only, as a fresh container would hold
        return container

    return metrics_container


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct import executor

    _CONTAINERS.clear()
    return [Replacement(executor, "MetricsContainer", _per_thread)]


PATCH = Patch(
    "bundle_metrics", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements
)
install = PATCH.install
uninstall = PATCH.uninstall
