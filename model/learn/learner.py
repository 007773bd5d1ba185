"""Incremental learning over any ``nn.Module``: one optimizer step per micro-batch.

:class:`IncrementalLearner` trains a classifier from a stream of labelled batches:

- SGD (with momentum) or Adam; gradient accumulation over ``accumulate`` batches;
- a reservoir replay buffer: every step mixes ``replay_batch`` rows sampled uniformly
  from all rows seen so far (kept to ``replay_size``), which protects old concepts;
- online EWC: a running diagonal Fisher estimate and an anchor refreshed every
  ``ewc_every`` steps; the penalty ``ewc_lambda/2 * sum F (theta - theta*)^2`` resists
  forgetting what the anchor knew;
- ``standardize``: features are scaled by a running mean and variance (Welford) of
  the rows seen before the batch (the very first batch by its own), so raw features
  of any range work and a prediction never uses statistics of the rows it scores
  that a learning step after it would not also use;
- ``device``: where the module trains (``cpu``, ``cuda``, ``cuda:N`` or ``auto``, a
  real ``torch.device``; a bad string or an absent GPU is an error); replay and
  scaling stay on the host;
- ``kernel``: ``"fused"`` trains plain MLPs on the CPU with
  :class:`model.learn.fused.FusedMLP` (hand-derived gradients, one forward shared by
  :meth:`predict_learn`; in C, with the scaling fused in, where a compiler is
  available, else numpy), many times faster than autograd on micro-batches;
  ``"autograd"`` works for any module; ``"auto"`` picks the fused kernel where it
  applies (:mod:`model.learn.backend`: the choice is made once, in the constructor);
- :meth:`set_lr` changes the learning rate on demand (e.g. on a drift alarm);
- deterministic for a given seed; :meth:`snapshot`/:meth:`restore` capture weights,
  optimizer, replay, EWC state, random state and counters, so a restored learner
  continues exactly (bytes: ``dumps_state(learner.snapshot())`` and
  ``learner.restore(loads_state(data))``).

The pieces live in their own modules: the backends (:mod:`model.learn.backend`), the
replay (:mod:`model.learn.replay`), EWC (:mod:`model.learn.ewc`), the scaling
(:mod:`model.learn.scaler`, :mod:`model.learn.standardized`); the learner feeds them
in order.

>>> import torch
>>> from model.mlp import MLPClassifier
>>> learner = IncrementalLearner(MLPClassifier(2, (8,), seed=0), LearnerConfig(seed=0))
>>> x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
>>> y = (x[:, 0] > 0).long()
>>> for _ in range(30):
...     _ = learner.learn(x, y)
>>> bool((learner.predict(x)[0] == y.numpy()).mean() > 0.9), learner.steps
(True, 30)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from model.device import resolve_device
from model.learn.backend import AutogradBackend, Backend, Classified, make_backend
from model.learn.ewc import OnlineEWC
from model.learn.native import label_error
from model.learn.optim_import import skip_dynamo_import
from model.learn.replay import Reservoir
from model.learn.scaler import RunningScaler
from model.learn.standardized import Standardized, StandardizedFactory
from model.learn.state_bytes import dumps_state, loads_state
from model.memory_control import MemoryConfig, MemoryControl

# dumps_state, loads_state, Standardized and StandardizedFactory were defined here
# before they had modules of their own: importing them from here keeps working.
__all__ = [
    "IncrementalLearner",
    "LearnerConfig",
    "Standardized",
    "StandardizedFactory",
    "dumps_state",
    "loads_state",
]


@dataclass(frozen=True)
class LearnerConfig:
    """How the learner trains. Every field is validated."""

    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 1e-2
    momentum: float = 0.0
    accumulate: int = 1
    replay_size: int = 0
    replay_batch: int = 64
    ewc_lambda: float = 0.0
    ewc_decay: float = 0.9
    ewc_every: int = 20
    standardize: bool = False
    kernel: Literal["auto", "autograd", "fused"] = "auto"
    device: str = "cpu"
    seed: int = 0
    memory: MemoryConfig = MemoryConfig()

    def __post_init__(self) -> None:
        resolve_device(self.device)  # a ValueError naming the problem
        if self.kernel not in ("auto", "autograd", "fused"):
            msg = f"kernel must be 'auto', 'autograd' or 'fused', got {self.kernel!r}"
            raise ValueError(msg)
        if self.optimizer not in ("sgd", "adam"):
            msg = f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}"
            raise ValueError(msg)
        if self.lr <= 0:
            msg = f"lr must be > 0, got {self.lr!r}"
            raise ValueError(msg)
        for name in ("accumulate", "ewc_every", "replay_batch"):
            if getattr(self, name) <= 0:
                msg = f"{name} must be > 0, got {getattr(self, name)!r}"
                raise ValueError(msg)
        if self.replay_size < 0 or self.ewc_lambda < 0:
            msg = (
                "replay_size and ewc_lambda must be >= 0, got "
                f"{self.replay_size!r}, {self.ewc_lambda!r}"
            )
            raise ValueError(msg)
        if not 0 <= self.ewc_decay <= 1:
            msg = f"ewc_decay must be in [0, 1], got {self.ewc_decay!r}"
            raise ValueError(msg)


class IncrementalLearner:
    """Trains ``module`` one micro-batch at a time; see the module docstring."""

    def __init__(self, module: nn.Module, config: LearnerConfig | None = None) -> None:
        self.config = config or LearnerConfig()
        self.device = resolve_device(self.config.device)
        self.module = module.to(self.device)
        params = list(module.parameters())
        skip_dynamo_import()
        if self.config.optimizer == "adam":
            # The fused kernel is one call per step instead of several per parameter.
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=self.config.lr, fused=self.device.type in ("cpu", "cuda")
            )
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=self.config.lr, momentum=self.config.momentum
            )
        self.backend: Backend[Any] = make_backend(
            module, self.optimizer, self.config.kernel, self.device
        )
        self.replay = Reservoir(self.config.replay_size, self.config.seed)
        self.ewc: OnlineEWC[Any] = OnlineEWC(
            self.config.ewc_lambda, self.config.ewc_decay, self.config.ewc_every
        )
        self.scaler = RunningScaler() if self.config.standardize else None
        # a memory budget splits a step into accumulated micro-batches (autograd only:
        # the fused kernel's memory is a scratch buffer sized by the batch, in numpy)
        self.memory: MemoryControl | None = None
        if self.config.memory.enabled and isinstance(self.backend, AutogradBackend):
            self.memory = self.config.memory.build(self.device)
            self._budgeted = self.memory.trainer(params, self.optimizer)
        self._wrapper: Standardized | None = None  # what export() returns, reused
        self.samples = 0
        self.batches = 0
        self.steps = 0

    # -- learning -----------------------------------------------------------------
    def learn(self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
        """One micro-batch; an optimizer step every ``accumulate`` batches. Returns the
        loss on the batch (and its replayed rows) before the step."""
        return self._learn(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64))[1]

    def predict_learn(
        self, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Prequential: the prediction of :meth:`predict` by the model as it was before
        this batch, then :meth:`learn` from it; the fused kernel shares one forward."""
        x_np, y_np = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if not self.backend.shares_forward(self.scaler):
            pred, conf = self.predict(x_np)
            return pred, conf, self._learn(x_np, y_np)[1]
        classified, loss = self._learn(x_np, y_np)
        assert classified is not None
        n = len(x_np)
        return classified[0][:n], classified[1][:n], loss

    def learn_steps(
        self,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        step_rows: int,
        *,
        predict: bool = True,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`learn` (``predict``: :meth:`predict_learn`) on every ``step_rows`` rows
        in turn; with ``predict``, each row's class and probability by the model as it
        was before its step. Where the backend can run the loop itself (the fused kernel
        in C, without replay, EWC or accumulation) it does, in one call: the same
        results as the loop."""
        x_np, y_np = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)
        if step_rows <= 0:
            msg = f"step_rows must be > 0, got {step_rows!r}"
            raise ValueError(msg)
        classes = self.backend.classes()
        if classes is not None and len(y_np) and (y_np.min() < 0 or y_np.max() >= classes):
            raise ValueError(label_error(y_np, classes))  # before any step: nothing learned
        preds, confs = [], []
        start = 0
        while start < len(x_np):
            if self._loops_alone():
                rest = len(x_np) - start
                done = self.backend.learn_steps(x_np[start:], y_np[start:], step_rows, self.scaler)
                if done is not None:
                    steps = -(-rest // step_rows)
                    self.batches, self.steps = self.batches + steps, self.steps + steps
                    self.samples += rest
                    preds.append(done[0])
                    confs.append(done[1])
                    break
            rows = slice(start, start + step_rows)
            if predict:
                pred, conf, _ = self.predict_learn(x_np[rows], y_np[rows])
                preds.append(pred)
                confs.append(conf)
            else:
                self.learn(x_np[rows], y_np[rows])
            start += step_rows
        if not predict:
            return None
        if not preds:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        return (
            (preds[0], confs[0])
            if len(preds) == 1
            else (np.concatenate(preds), np.concatenate(confs))
        )

    def _loops_alone(self) -> bool:
        """Whether a step is forward-backward and the optimizer alone (no replayed
        rows, no EWC, no accumulation), with the scaling's moments ready."""
        return (
            self.replay.capacity == 0
            and not self.ewc.active
            and self.config.accumulate == 1
            and (self.scaler is None or self.scaler.ready)
        )

    def _learn(self, x: np.ndarray, y: np.ndarray) -> tuple[Classified | None, float]:
        """The backend's classes of the (scaled) rows before the step, if it gives
        them, and the loss."""
        rows, targets = x, y
        replayed = self.replay.sample(self.config.replay_batch)
        if replayed is not None:
            rows, targets = np.concatenate([x, replayed[0]]), np.concatenate([y, replayed[1]])
        if self.memory is not None and isinstance(self.backend, AutogradBackend):
            classified, loss = None, self._budgeted_backward(x, rows, targets)
        else:
            classified, loss = self.backend.forward_backward(
                x, rows, targets, 1.0 / self.config.accumulate, self.scaler
            )
        self.batches += 1
        if self.batches % self.config.accumulate == 0:
            self._step()
        self.replay.add(x, y)  # raw rows: replay is rescaled when sampled
        self.samples += len(x)
        return classified, loss

    def _budgeted_backward(self, x: np.ndarray, rows: np.ndarray, targets: np.ndarray) -> float:
        """:meth:`Backend.forward_backward` in micro-batches the memory controller
        sizes, accumulated: the same gradient, less memory at once."""
        assert self.memory is not None and isinstance(self.backend, AutogradBackend)
        inputs = rows if self.scaler is None else self.scaler.scale_and_fold(x, rows)
        report = self._budgeted.accumulate(
            [1.0] * len(inputs),
            self.backend.loss_of(inputs, targets),
            scale=1.0 / self.config.accumulate,
        )
        self.memory.figures.add(
            report.micro_batches, report.ooms, report.over_budget, report.peak_bytes
        )
        return report.loss

    def _step(self) -> None:
        """The optimizer step on the accumulated gradient, then EWC's (the squared
        gradient is taken first: the step clears it)."""
        squared = self.ewc.squared(self.backend.grads()) if self.ewc.active else None
        self.backend.step()
        self.steps += 1
        if squared is not None:
            self.ewc.after_step(self.backend.params(), squared, self.lr, self.steps)

    def set_lr(self, lr: float) -> None:
        if lr <= 0:
            msg = f"lr must be > 0, got {lr!r}"
            raise ValueError(msg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # -- prediction ---------------------------------------------------------------
    def predict(self, x: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and its probability per row (eval mode, no gradients)."""
        return self.backend.predict(np.asarray(x, np.float32), self.scaler)

    def export(self, factory: Callable[[], nn.Module]) -> tuple[nn.Module, Callable[[], nn.Module]]:
        """The model to publish and a factory that rebuilds its structure: with
        ``standardize`` the running scaling is folded in (:class:`Standardized`).
        Either way it shares the live weights (and the wrapper is the same object at
        every call): serialize it before learning again."""
        moments = None if self.scaler is None else self.scaler.moments()
        if moments is None:
            return self.module, factory
        mean, std = moments
        wrapped = self._wrapper
        if wrapped is None or wrapped.mean.shape != (len(mean),):
            # built once (building a module costs more than refreshing its buffers)
            wrapped = self._wrapper = Standardized(self.module, len(mean)).to(self.device)
        wrapped.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        wrapped.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        return wrapped, StandardizedFactory(factory, len(mean))

    # -- state --------------------------------------------------------------------
    def inference_state(self) -> dict[str, Any]:
        """What :meth:`predict` needs (weights and scaling), a copy, without optimizer,
        replay or EWC: the online step keeps one per window, to score a late window
        by the model of its time. A part of :meth:`snapshot`, not a substitute: load
        it with :meth:`load_inference_state`."""
        # the weights cloned, not deep-copied: far cheaper, and it runs per window
        return {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "scaler": None if self.scaler is None else copy.deepcopy(self.scaler.snapshot()),
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        """Predict as the learner that gave :meth:`inference_state` did (its weights and
        scaling; the rest of this learner's state is left as it was)."""
        self.module.load_state_dict(state["module"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.restore(state["scaler"])

    def snapshot(self, *, copy_state: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: a deep copy, safe to keep. With
        ``copy_state=False`` the tensors are the live ones: serialize the snapshot
        before the learner learns again (it saves a deep copy per snapshot)."""
        accumulating = self.batches % self.config.accumulate != 0
        ewc = self.ewc.snapshot()
        snap = {  # the layout of every snapshot so far, whichever kernel trained
            **self.backend.snapshot(accumulating=accumulating),  # module, optimizer, grads
            "replay": self.replay.snapshot(),
            "fisher": self._tensors(ewc["fisher"]),  # one tensor per parameter
            "anchor": self._tensors(ewc["anchor"]),
            "counters": (self.samples, self.batches, self.steps),
            "scaler": None if self.scaler is None else self.scaler.snapshot(),
        }
        return copy.deepcopy(snap) if copy_state else snap

    def restore(self, state: dict[str, Any], *, copy_state: bool = True) -> None:
        """Continue from ``state`` (a :meth:`snapshot` of a learner of the same module
        and config, with either kernel); ``copy_state=False`` when nothing else holds
        it (e.g. freshly deserialized), to skip a deep copy."""
        if copy_state:
            state = copy.deepcopy(state)
        self.backend.restore(state)
        self.replay.restore(state["replay"])
        self.ewc.restore({k: self._arrays(state[k]) for k in ("fisher", "anchor")})
        self.samples, self.batches, self.steps = state["counters"]
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.restore(state["scaler"])

    def _tensors(self, arrays: list[Any] | None) -> list[torch.Tensor] | None:
        return None if arrays is None else self.backend.tensors(arrays)

    def _arrays(self, tensors: list[torch.Tensor] | None) -> list[Any] | None:
        return None if tensors is None else self.backend.arrays(tensors)
