"""Bytes of a learner's state: :func:`dumps_state` and :func:`loads_state`.

Every stateful piece of ``model/`` hands out a small picklable state from
``snapshot()`` and takes it back in ``restore()``; these two functions turn such a
state (nested dicts, lists, tuples, tensors, numpy arrays) into bytes and back.

>>> import torch
>>> back = loads_state(dumps_state({"w": torch.ones(2), "n": 3}))
>>> back["w"].tolist(), back["n"]
([1.0, 1.0], 3)
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import numpy as np
import torch

_PICKLE = b"SML-state-pickle5\n"
_TORCH_SAVE = b"SML-state-torch\n"


class _Tensor:
    """A CPU tensor pickled as its numpy array (rebuilt with ``torch.from_numpy``)."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, tuple[np.ndarray]]:
        return torch.from_numpy, (self.array,)


class _NotOnCpu(Exception):
    pass


def _numpy_tensors(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        if obj.device.type != "cpu":  # keep the device: torch.save does
            raise _NotOnCpu
        return _Tensor(obj.detach().numpy())  # TypeError for dtypes numpy lacks
    if isinstance(obj, dict):
        return {k: _numpy_tensors(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numpy_tensors(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_numpy_tensors(v) for v in obj)
    return obj


def dumps_state(state: Any) -> bytes:
    """Bytes of a state (nested dicts, lists, tuples, tensors, numpy arrays).

    Tensors travel as numpy arrays in a protocol-5 pickle, much cheaper than
    ``torch.save`` for the many small tensors of a learner (it matters: the online
    step writes its state at every firing). States holding tensors numpy cannot
    represent (bfloat16, ...) or tensors off the CPU fall back to ``torch.save``.
    Trusted data only, like any pickle."""
    try:
        return _PICKLE + pickle.dumps(_numpy_tensors(state), protocol=5)
    except (TypeError, RuntimeError, _NotOnCpu):
        buf = io.BytesIO()
        torch.save(state, buf)
        return _TORCH_SAVE + buf.getvalue()


def loads_state(data: bytes) -> Any:
    """The state :func:`dumps_state` wrote (or a bare ``torch.save``, the format before
    it, so older state and snapshots still load)."""
    view = memoryview(data)
    if data.startswith(_PICKLE):
        return pickle.loads(view[len(_PICKLE) :])
    if data.startswith(_TORCH_SAVE):
        view = view[len(_TORCH_SAVE) :]
    return torch.load(io.BytesIO(view), weights_only=False)
