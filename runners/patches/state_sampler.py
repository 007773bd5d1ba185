"""Sample step state every millisecond at most, so that bundle ends do not wait.

Each bundle on the FnApiRunner starts a state-sampler thread (it attributes time to
steps for Beam's msecs counters) that sleeps in periods growing from 2 ms to 200 ms,
and the end of the bundle joins it: the caller waits out the current sleep, up to
200 ms per bundle. Sampling every ``SAMPLING_PERIOD_MS`` at most (a longer period
asked for explicitly is capped too) keeps the counters, more finely grained, and
caps the wait.

Written for Beam 2.77.0; serves the bounded FnApiRunner only: the streaming
BundleBasedDirectRunner makes one sampler per worker thread and never starts its
sampling thread, so its bundle ends wait for nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runners.patches._patch import BOUNDED, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({BOUNDED})
SAMPLING_PERIOD_MS = 1


def _capped(original: Callable[..., None]) -> Callable[..., None]:
    def __init__(self: Any, prefix: str, counter: Any, sampling_period_ms: int = 0) -> None:
        period = min(sampling_period_ms or SAMPLING_PERIOD_MS, SAMPLING_PERIOD_MS)
        original(self, prefix, counter, period)

    return __init__


def _replacements() -> list[Replacement]:
    from apache_beam.runners.worker import statesampler

    return [Replacement(statesampler.StateSampler, "__init__", _capped)]


PATCH = Patch("state_sampler", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
