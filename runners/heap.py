"""The Python heap during a run: what is already built, frozen out of the collector.

An in-process run (the DirectRunner, Prism's and the embedded job server's Python
workers) holds a large, long-lived heap: Beam's pipeline graph, torch, Arrow and the
imported modules. CPython's cyclic collector walks all of it at every full
collection, and a run that makes many small objects (a stream of thousands of tiny
windows, its statistics rows, its report) triggers many: on such a run a tenth of
the time went to walking objects that live until the process ends.
:func:`frozen_heap` moves what exists when the run starts to the permanent
generation (``gc.freeze``) and back when it ends (``gc.unfreeze``), so garbage made
before or during the run is still collected, later.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Objects alive on entry are not walked by the collector until exit."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
