"""Every bundle's user metrics reach the result, not only a thread's first bundle's.

The streaming BundleBasedDirectRunner makes a fresh ``MetricsContainer`` for each
bundle, hands it to its worker thread's ``StateSampler.scoped_state`` and, once the
bundle is done, commits that container's cumulative values. But the sampler caches
its scoped states by step and state name, so from the second bundle a thread runs
of a step on, ``scoped_state`` returns the first bundle's state with the first
bundle's container: counters and distributions that DoFns update land there, after
it was committed, and are never reported (a DoFn counting 100 elements in 10 bundles
reports 10). Here a cached state that holds another container than the one asked
for is replaced by a fresh one for the new container; the state's time counter is
the same object (the sampler's counter factory keys it by name), so the
``msecs`` counters are unchanged.

Unlike the other patches this one changes a result: the metrics become right. The
summary's memory-control line reads them (``pipelines.summary.memory_figures``).

Written for Beam 2.77.0; serves the streaming runner (the FnApiRunner's workers keep
one container per step and reset it per bundle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})


def _per_bundle(original: Callable[..., Any]) -> Callable[..., Any]:
    def scoped_state(
        self: Any,
        name_context: Any,
        state_name: str,
        io_target: Any = None,
        metrics_container: Any = None,
    ) -> Any:
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is None or state.metrics_container is metrics_container:
            return state
        for key in [k for k, v in self._states_by_name.items() if v is state]:
            del self._states_by_name[key]
        return original(self, name_context, state_name, io_target, metrics_container)

    return scoped_state


def _replacements() -> list[Replacement]:
    from apache_beam.runners.worker import statesampler

    return [Replacement(statesampler.StateSampler, "scoped_state", _per_bundle)]


PATCH = Patch(
    "bundle_metrics", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements
)
install = PATCH.install
uninstall = PATCH.uninstall
