"""A classifier's output layer grown to more classes, in a learner's snapshot.

A class first seen mid-stream needs an output of its own. :func:`grow_snapshot`
takes an :meth:`IncrementalLearner.snapshot` whose model ends in a linear head
(its last two parameters: weight ``(classes, width)`` and bias ``(classes,)``, as
:class:`model.mlp.MLPClassifier` and :class:`model.transformer` heads do) and gives
the snapshot of the same learner with ``num_classes`` outputs: the known classes'
weights, optimizer moments, EWC statistics and accumulated gradient as they were;
the new classes' rows zero, with a bias at the lowest known one (the new class
starts as the least likely a priori; the first rows of it move it). Restore it into
a learner of a module built for ``num_classes``.

>>> import numpy as np
>>> from model.mlp import MLPClassifier
>>> from model.learn.learner import IncrementalLearner
>>> old = IncrementalLearner(MLPClassifier(3, (4,), 2, seed=0))
>>> _ = old.learn(np.ones((4, 3), np.float32), np.array([0, 1, 0, 1]))
>>> new = IncrementalLearner(MLPClassifier(3, (4,), 3, seed=0))
>>> new.restore(grow_snapshot(old.snapshot(), 3))
>>> new.predict(np.ones((1, 3), np.float32))[0].tolist() == old.predict(np.ones((1, 3)))[0].tolist()
True
"""

from __future__ import annotations

from typing import Any

import torch


def output_classes(weights: dict[str, torch.Tensor]) -> int:
    """How many classes the module whose state dict is ``weights`` outputs."""
    return int(_head(weights)[1].shape[0])


def grow_weights(weights: dict[str, torch.Tensor], num_classes: int) -> dict[str, torch.Tensor]:
    """A module state dict with its head grown to ``num_classes`` outputs (see the
    module docstring); the dict itself when it has them already."""
    (w_key, b_key), _ = _head(weights)
    known = weights[b_key].shape[0]
    if num_classes < known:
        msg = f"a head of {known} classes cannot shrink to {num_classes}"
        raise ValueError(msg)
    if num_classes == known:
        return weights
    grown = dict(weights)
    grown[w_key] = _pad(weights[w_key], num_classes, 0.0)
    grown[b_key] = _pad(weights[b_key], num_classes, float(weights[b_key].min()))
    return grown


def grow_snapshot(snapshot: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """An :meth:`IncrementalLearner.snapshot` grown to ``num_classes`` outputs (see
    the module docstring). The input is left as it was."""
    module = snapshot["module"]
    (w_key, b_key), _ = _head(module)
    known = module[b_key].shape[0]
    grown = dict(snapshot, module=grow_weights(module, num_classes))
    if num_classes == known:
        return grown
    # the head's parameter indices: the last two of the optimizer's parameters (the
    # state dict may hold buffers too)
    count = sum(len(group["params"]) for group in snapshot["optimizer"]["param_groups"])
    head = (count - 2, count - 1)

    def per_parameter(tensors: list[torch.Tensor] | None, anchor: bool = False):
        if tensors is None:
            return None
        out = list(tensors)
        for index, key in zip(head, (w_key, b_key), strict=True):
            t = out[index]
            # an EWC anchor's new rows are the new weights: no pull away from them
            extra = grown["module"][key][known:] if anchor else None
            out[index] = _pad(t, num_classes, 0.0) if extra is None else torch.cat([t, extra])
        return out

    grown["grads"] = per_parameter(snapshot.get("grads"))
    grown["fisher"] = per_parameter(snapshot.get("fisher"))
    grown["anchor"] = per_parameter(snapshot.get("anchor"), anchor=True)
    optimizer = snapshot["optimizer"]
    state = dict(optimizer["state"])
    for index in head:
        if index in state:
            state[index] = {
                name: _pad(v, num_classes, 0.0)
                if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == known
                else v
                for name, v in state[index].items()
            }
    grown["optimizer"] = dict(optimizer, state=state)
    return grown


def _head(weights: dict[str, torch.Tensor]) -> tuple[tuple[str, str], torch.Tensor]:
    keys = list(weights)
    if len(keys) < 2:
        msg = "growing classes needs a module whose last parameters are a linear head"
        raise ValueError(msg)
    w_key, b_key = keys[-2], keys[-1]
    w, b = weights[w_key], weights[b_key]
    if w.dim() != 2 or b.dim() != 1 or w.shape[0] != b.shape[0]:
        msg = (
            "growing classes needs a module whose last parameters are a linear head "
            f"(weight, bias), got {w_key} {tuple(w.shape)} and {b_key} {tuple(b.shape)}"
        )
        raise ValueError(msg)
    return (w_key, b_key), b


def _pad(t: torch.Tensor, rows: int, fill: float) -> torch.Tensor:
    extra = torch.full((rows - t.shape[0], *t.shape[1:]), fill, dtype=t.dtype, device=t.device)
    return torch.cat([t.detach(), extra])
