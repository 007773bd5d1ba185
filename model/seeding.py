"""Seeded module construction that leaves torch's global random state as it was.

>>> import torch
>>> before = torch.random.get_rng_state()
>>> with seeded(0):
...     a = torch.rand(2)
>>> with seeded(0):
...     b = torch.rand(2)
>>> bool((a == b).all()), bool((torch.random.get_rng_state() == before).all())
(True, True)
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

# One seeded construction at a time in this process: each seeds torch's CPU generator
# and puts it back afterwards, and two interleaved in threads (a runner builds models
# in its worker threads) would draw from each other's streams. Other draws from the
# global generator in other threads meanwhile still interfere, as with any shared
# global generator.
_LOCK = threading.Lock()


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Inside: torch's CPU generator seeded with ``seed``; after: as it was before.
    ``None``: nothing is seeded or restored."""
    if seed is None:
        yield
        return
    with _LOCK, torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
