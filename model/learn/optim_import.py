"""torch's optimizers without the 2 s import of ``torch._dynamo`` they do not need.

``torch.optim.Optimizer``'s ``add_param_group``, ``state_dict``, ``load_state_dict``
and ``zero_grad`` are wrapped by ``torch._disable_dynamo``, which imports
``torch._dynamo`` on the first call (about 2 s of every process's start here: more
than a small stream's whole run) only to mark them as not to be traced by
``torch.compile``. :func:`skip_dynamo_import` marks them as their own disabled form
when ``torch._dynamo`` is not loaded yet, so building, snapshotting and restoring an
optimizer no longer loads it. The fused kernel then never loads it; autograd steps
still do (torch's step functions are wrapped the same way, and left alone).

What it changes: a ``torch.compile`` that traces a function calling these four
methods traces into them instead of stepping around them. Nothing here compiles
optimizer calls (compiled modules only run inference).
"""

from __future__ import annotations

import sys

import torch

_METHODS = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")
_MARK = "__dynamo_disable"  # where torch._compile._disable_dynamo caches its wrapper


def skip_dynamo_import() -> None:
    """Let the optimizer methods above run without importing ``torch._dynamo``. A
    no-op once it is imported, or where torch's wrappers are not the ones this
    knows; marks set before dynamo was imported stay for the process (those four
    methods are then not stepped around by a later ``torch.compile``)."""
    if "torch._dynamo" in sys.modules:
        return
    for name in _METHODS:
        fn = getattr(getattr(torch.optim.Optimizer, name), "__wrapped__", None)
        if fn is not None and getattr(fn, _MARK, None) is None:
            setattr(fn, _MARK, fn)
