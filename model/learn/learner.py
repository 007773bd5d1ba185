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
- ``kernel``: ``"fused"`` trains plain MLPs on the CPU with :class:`model.learn.fused.FusedMLP`
  (hand-derived gradients, one forward shared by :meth:`predict_learn`; in C, with
  the scaling fused in, where a compiler is available, else numpy), many times
  faster than autograd on micro-batches; ``"autograd"`` works for any module;
  ``"auto"`` picks the fused kernel where it applies;
- :meth:`set_lr` changes the learning rate on demand (e.g. on a drift alarm);
- deterministic for a given seed; :meth:`snapshot`/:meth:`restore` (and
  :meth:`to_bytes`/:meth:`from_bytes`) capture weights, optimizer, replay, EWC state,
  random state and counters, so a restored learner continues exactly.

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
import io
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from model.device import resolve_device
from model.handler import classify_logits
from model.learn.fused import FusedMLP, mlp_linears, optimizer_supported
from model.learn.scaler import RunningScaler


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


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``x``'s memory; read-only Arrow views are never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(x)


class Reservoir:
    """Uniform sample of all rows seen so far (Vitter's algorithm R), seeded."""

    def __init__(self, capacity: int, seed: int) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng([seed, 7])
        self.x: np.ndarray | None = None
        self.y: np.ndarray | None = None
        self.seen = 0
        self.size = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        if self.capacity == 0 or len(x) == 0:
            return
        if self.x is None:
            self.x = np.empty((self.capacity, *x.shape[1:]), dtype=x.dtype)
            self.y = np.empty(self.capacity, dtype=y.dtype)
        assert self.y is not None
        n = len(x)
        fill = min(n, self.capacity - self.size)
        if fill:
            self.x[self.size : self.size + fill] = x[:fill]
            self.y[self.size : self.size + fill] = y[:fill]
            self.size += fill
        if n > fill:
            # Row t (t rows seen before it) replaces slot j ~ U{0..t} when j < capacity;
            # later rows win a shared slot, as in the sequential algorithm.
            highs = self.seen + fill + np.arange(n - fill) + 1
            slots = self.rng.integers(0, highs)
            keep = slots < self.capacity
            self.x[slots[keep]] = x[fill:][keep]
            self.y[slots[keep]] = y[fill:][keep]
        self.seen += n

    def sample(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        if self.size == 0 or self.x is None or self.y is None:
            return None
        idx = self.rng.integers(0, self.size, min(n, self.size))
        return self.x[idx], self.y[idx]

    def state(self) -> dict[str, Any]:
        return {
            "x": None if self.x is None else self.x[: self.size].copy(),
            "y": None if self.y is None else self.y[: self.size].copy(),
            "seen": self.seen,
            "rng": self.rng.bit_generator.state,
        }

    def load(self, state: dict[str, Any]) -> None:
        self.seen, self.size = state["seen"], 0 if state["x"] is None else len(state["x"])
        self.rng.bit_generator.state = state["rng"]
        self.x = self.y = None
        if state["x"] is not None:
            self.x = np.empty((self.capacity, *state["x"].shape[1:]), dtype=state["x"].dtype)
            self.y = np.empty(self.capacity, dtype=state["y"].dtype)
            self.x[: self.size], self.y[: self.size] = state["x"], state["y"]


class Standardized(nn.Module):
    """``inner`` applied to features scaled by fixed means and standard deviations:
    a learner's model as published, so a scorer needs no scaler of its own."""

    def __init__(self, inner: nn.Module, num_features: int) -> None:
        super().__init__()
        self.inner = inner
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std)


@dataclass(frozen=True)
class StandardizedFactory:
    """Builds an empty :class:`Standardized` around ``factory()`` (picklable)."""

    factory: Callable[[], nn.Module]
    num_features: int

    def __call__(self) -> nn.Module:
        return Standardized(self.factory(), self.num_features)


class IncrementalLearner:
    """Trains ``module`` one micro-batch at a time; see the module docstring."""

    def __init__(self, module: nn.Module, config: LearnerConfig | None = None) -> None:
        self.config = config or LearnerConfig()
        self.device = resolve_device(self.config.device)
        self.module = module.to(self.device)
        self.loss_fn = nn.CrossEntropyLoss()
        params = list(module.parameters())
        if self.config.optimizer == "adam":
            # The fused kernel is one call per step instead of several per parameter.
            self.optimizer: torch.optim.Optimizer = torch.optim.Adam(
                params, lr=self.config.lr, fused=self.device.type in ("cpu", "cuda")
            )
        else:
            self.optimizer = torch.optim.SGD(
                params, lr=self.config.lr, momentum=self.config.momentum
            )
        self.kernel: FusedMLP | None = None
        if self.config.kernel != "autograd":
            linears = mlp_linears(module)
            if linears is not None and optimizer_supported(self.optimizer):
                self.kernel = FusedMLP(linears, self.optimizer)
            elif self.config.kernel == "fused":
                msg = (
                    "kernel='fused' needs a float32 CPU MLP (MLPClassifier, or nn.Sequential "
                    f"of Linear and ReLU ending in Linear), got {type(module).__name__}"
                )
                raise ValueError(msg)
        self.replay = Reservoir(self.config.replay_size, self.config.seed)
        self.scaler = RunningScaler() if self.config.standardize else None
        self.fisher: list[torch.Tensor] | None = None
        self.anchor: list[torch.Tensor] | None = None
        self._ewc_flat: dict[str, np.ndarray] = {}  # fused kernel: the flat arrays
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
        if self.kernel is None or (self.scaler is not None and not self.scaler.ready):
            pred, conf = self.predict(x_np)
            return pred, conf, self._learn(x_np, y_np)[1]
        classified, loss = self._learn(x_np, y_np)
        assert classified is not None
        n = len(x_np)
        return classified[0][:n], classified[1][:n], loss

    def _learn(
        self, x: np.ndarray, y: np.ndarray
    ) -> tuple[tuple[np.ndarray, np.ndarray] | None, float]:
        """Class and probability of the (scaled) rows before the step (fused kernel
        only), and the loss."""
        raw, targets = x, y
        replayed = self.replay.sample(self.config.replay_batch)
        if replayed is not None:
            raw, targets = np.concatenate([x, replayed[0]]), np.concatenate([y, replayed[1]])
        scale = 1.0 / self.config.accumulate
        classified: tuple[np.ndarray, np.ndarray] | None = None
        if self.kernel is not None:
            # with moments to scale by, the kernel scales and folds the batch in itself
            scaler = self._ready_scaler()
            inputs = raw if scaler is not None else self._scale_and_update(x, raw)
            pred, conf, loss = self.kernel.forward_backward(
                inputs, targets, scale, scaler, fold=len(x)
            )
            classified = pred, conf
        else:
            inputs = self._scale_and_update(x, raw)
            if not self.module.training:
                self.module.train()
            xt = _tensor(inputs).to(self.device, non_blocking=True)
            yt = torch.from_numpy(targets).to(self.device, non_blocking=True)
            out = self.loss_fn(self.module(xt), yt)
            (out * scale).backward()
            loss = float(out.detach())
        self.batches += 1
        if self.batches % self.config.accumulate == 0:
            ewc = bool(self.config.ewc_lambda)
            if self.kernel is not None:
                squared_flat = self.kernel.grad * self.kernel.grad if ewc else None
                self.kernel.step()
                if squared_flat is not None:
                    self._ewc_fused(squared_flat)
            else:
                squared = [g**2 for g in self._grads()] if ewc else None
                self.optimizer.step()
                self.optimizer.zero_grad()
                if squared is not None:
                    self._ewc(squared)
            self.steps += 1
            if ewc and self.steps % self.config.ewc_every == 0:
                if self.kernel is not None:
                    self._set_ewc_flat("anchor", self.kernel.flat.copy())
                else:
                    self.anchor = [p.detach().clone() for p in self.module.parameters()]
        self.replay.add(x, y)  # raw rows: replay is rescaled when sampled
        self.samples += len(x)
        return classified, loss

    def _ready_scaler(self) -> RunningScaler | None:
        """The scaler, if standardizing and it has moments to scale by."""
        return self.scaler if self.scaler is not None and self.scaler.ready else None

    def _scale_and_update(self, batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """``rows`` scaled by the moments of the rows seen before ``batch`` (by
        ``batch``'s own when none were), then ``batch`` folded into the moments."""
        if self.scaler is None:
            return rows
        if not self.scaler.ready:
            self.scaler.update(batch)
            return self.scaler.transform(rows)
        out = self.scaler.transform(rows)
        self.scaler.update(batch)
        return out

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        return x if self.scaler is None else self.scaler.transform(x)

    def _grads(self) -> list[torch.Tensor]:
        """The accumulated loss gradient, one tensor per parameter, shared with the
        optimizer's input (writing to it changes the step)."""
        if self.kernel is not None:
            return [torch.from_numpy(g) for g in self.kernel.grad_views]
        for p in self.module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [p.grad.detach() for p in self.module.parameters()]  # type: ignore[union-attr]

    def _ewc(self, squared: list[torch.Tensor]) -> None:
        """After a step on the loss: the proximal step of the penalty ``ewc_lambda/2 *
        sum F (theta - theta*)^2``, ``theta <- theta* + (theta - theta*) / (1 + lr *
        ewc_lambda * F)``, which is stable for any stiffness (an explicit gradient of
        it diverges once ``lr * ewc_lambda * F > 2``); then the squared loss gradient
        (never the penalty's) joins the running Fisher estimate. The step size is the
        learning rate: exact for SGD; with Adam, whose steps are normalized, the pull
        toward the anchor is relatively stronger for the same ``ewc_lambda``."""
        if self.fisher is not None and self.anchor is not None:
            stiffness = self.lr * self.config.ewc_lambda
            with torch.no_grad():
                for p, f, a in zip(self.module.parameters(), self.fisher, self.anchor, strict=True):
                    p.sub_(a).div_(1.0 + stiffness * f).add_(a)
        if self.fisher is None:
            self.fisher = squared
        else:
            d = self.config.ewc_decay
            self.fisher = [d * f + (1 - d) * n for f, n in zip(self.fisher, squared, strict=True)]

    def _ewc_fused(self, squared: np.ndarray) -> None:
        """:meth:`_ewc` on the fused kernel's flat buffers: three array operations per
        step instead of several torch calls per parameter (same float32 arithmetic).
        ``fisher`` and ``anchor`` stay lists of tensors, views of the flat arrays."""
        assert self.kernel is not None
        fisher, anchor = self._ewc_flat.get("fisher"), self._ewc_flat.get("anchor")
        if fisher is not None and anchor is not None:
            stiffness = self.lr * self.config.ewc_lambda
            flat = self.kernel.flat
            flat -= anchor
            flat /= 1.0 + stiffness * fisher
            flat += anchor
        if fisher is None:
            self._set_ewc_flat("fisher", squared)
        else:
            d = self.config.ewc_decay
            fisher *= d
            fisher += (1 - d) * squared

    def _set_ewc_flat(self, name: str, flat: np.ndarray | None) -> None:
        """Fused kernel: ``fisher`` or ``anchor`` as one flat array, and the tensor
        views of it that snapshots carry."""
        assert self.kernel is not None
        if flat is None:
            self._ewc_flat.pop(name, None)
            setattr(self, name, None)
            return
        self._ewc_flat[name] = flat
        setattr(self, name, [torch.from_numpy(v) for v in self.kernel.views(flat)])

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
        if self.kernel is not None:  # scales by the moments itself
            return self.kernel.classify(np.asarray(x, np.float32), self._ready_scaler())
        x_np = self._scaled(np.asarray(x, np.float32))
        if self.module.training:
            self.module.eval()
        with torch.inference_mode():
            return classify_logits(self.module(_tensor(x_np).to(self.device, non_blocking=True)))

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
            # built once (a module costs about 0.2 ms), its scaling refreshed per export
            wrapped = self._wrapper = Standardized(self.module, len(mean)).to(self.device)
        wrapped.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        wrapped.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        return wrapped, StandardizedFactory(factory, len(mean))

    def inference_state(self) -> dict[str, Any]:
        """What :meth:`predict` needs (weights and scaling), without optimizer or replay."""
        # the weights cloned, not deep-copied: a fifth of the time (it runs per window)
        return {
            "module": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "scaler": None if self.scaler is None else copy.deepcopy(self.scaler.state()),
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load(state["scaler"])

    # -- state --------------------------------------------------------------------
    def snapshot(self, *, copy_state: bool = True) -> dict[str, Any]:
        """Everything needed to continue exactly: a deep copy, safe to keep. With
        ``copy_state=False`` the tensors are the live ones: serialize the snapshot
        before the learner learns again (it saves a deep copy per snapshot)."""
        if self.kernel is not None:
            self.kernel.sync_optimizer_state()
        accumulating = self.batches % self.config.accumulate != 0
        snap = {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grads": self._grads() if accumulating else None,
            "replay": self.replay.state(),
            "fisher": self.fisher,
            "anchor": self.anchor,
            "counters": (self.samples, self.batches, self.steps),
            "scaler": None if self.scaler is None else self.scaler.state(),
        }
        return copy.deepcopy(snap) if copy_state else snap

    def restore(self, state: dict[str, Any], *, copy_state: bool = True) -> None:
        """Continue from ``state``; ``copy_state=False`` when nothing else holds it
        (e.g. freshly deserialized), to skip a deep copy."""
        if copy_state:
            state = copy.deepcopy(state)
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.kernel is not None:
            self.kernel.load_optimizer_state()
        grads = state.get("grads") or []  # a partly accumulated gradient, if any
        if self.kernel is not None:
            self.kernel.grad[...] = 0.0
            for view, g in zip(self.kernel.grad_views, grads, strict=bool(grads)):
                view[...] = g.numpy()
        else:
            for p in self.module.parameters():
                p.grad = None
            for p, g in zip(self.module.parameters(), grads, strict=bool(grads)):
                p.grad = g.clone()
        self.replay.load(state["replay"])
        if self.kernel is not None:
            for name in ("fisher", "anchor"):
                tensors = state[name]
                flat = None
                if tensors is not None:
                    flat = np.concatenate([t.detach().numpy().ravel() for t in tensors])
                    flat = flat.astype(np.float32)
                self._set_ewc_flat(name, flat)
        else:
            self.fisher, self.anchor = state["fisher"], state["anchor"]
        self.samples, self.batches, self.steps = state["counters"]
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load(state["scaler"])

    def to_bytes(self) -> bytes:
        return dumps_state(self.snapshot())

    def load_bytes(self, data: bytes) -> None:
        self.restore(loads_state(data))


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


_PICKLE = b"SML-state-pickle5\n"
_TORCH_SAVE = b"SML-state-torch\n"


def dumps_state(state: Any) -> bytes:
    """Bytes of a learner state (nested dicts, lists, tuples, tensors, numpy arrays).

    Tensors travel as numpy arrays in a protocol-5 pickle: about five times faster
    than ``torch.save`` for the many small tensors of a learner (it matters: the
    online step writes its state at every firing). States holding tensors numpy
    cannot represent (bfloat16, ...) fall back to ``torch.save``. Trusted data only,
    like any pickle."""
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
