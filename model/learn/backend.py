"""How an incremental learner computes its steps: one :class:`Backend`, chosen once.

:func:`make_backend` picks one for a module and optimizer
(:class:`model.learn.learner.IncrementalLearner` calls it in its constructor, then
only talks to the :class:`Backend` interface):

- :class:`AutogradBackend`: any ``nn.Module`` on any device; torch computes the
  gradients;
- :class:`FusedBackend`: plain MLPs on the CPU through
  :class:`model.learn.fused.FusedMLP` (hand-derived gradients, the scaling fused in;
  its forward while learning also gives the prediction of the model before the step,
  so a prequential step needs one forward, not two).

Either way the module and the torch optimizer stay the single record of the weights
and optimizer state, so a snapshot of one backend restores into the other. The
arrays a backend trains (:meth:`Backend.params`, :meth:`Backend.grads`: tensors per
parameter, or the fused kernel's one flat buffer) are what online EWC
(:class:`model.learn.ewc.OnlineEWC`) works on.

>>> import numpy as np, torch
>>> from model.mlp import MLPClassifier
>>> module = MLPClassifier(2, (4,), seed=0)
>>> backend = make_backend(module, torch.optim.SGD(module.parameters(), lr=0.1), "auto")
>>> type(backend).__name__
'FusedBackend'
>>> x, y = np.ones((3, 2), np.float32), np.array([0, 1, 1])
>>> _, loss = backend.forward_backward(x, x, y, 1.0, None)
>>> backend.step()
>>> backend.predict(x, None)[0].shape
(3,)
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Generic, Literal

import numpy as np
import torch
from torch import nn

from model.handler import classify_logits
from model.learn.ewc import A
from model.learn.fused import FusedMLP, mlp_linears, optimizer_supported
from model.learn.scaler import RunningScaler

Classified = tuple[np.ndarray, np.ndarray]  # class and its probability, per row


class Backend(ABC, Generic[A]):
    """Forward, backward, optimizer step and prediction for one module and optimizer.

    ``A`` is the kind of array :meth:`params` and :meth:`grads` hand out: views of the
    live parameters and accumulated gradient (writing to them changes the model or
    the next step)."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.module = module
        self.optimizer = optimizer

    @abstractmethod
    def forward_backward(
        self,
        batch: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        scale: float,
        scaler: RunningScaler | None,
    ) -> tuple[Classified | None, float]:
        """The mean cross-entropy on ``rows`` (``batch``, then any replayed rows), and
        ``scale`` times its gradient added to the accumulated gradient. With
        ``scaler`` (standardizing) the rows are scaled as by
        :meth:`RunningScaler.scale_and_fold`, which folds ``batch`` in. The classes
        and probabilities of the rows before the step where the backend computes
        them (see :meth:`shares_forward`), else None."""

    def shares_forward(self, scaler: RunningScaler | None) -> bool:
        """Whether :meth:`forward_backward`'s classes for the batch are what
        :meth:`predict` would have said just before it."""
        return False

    @abstractmethod
    def step(self) -> None:
        """One optimizer step on the accumulated gradient, which it then clears."""

    def classes(self) -> int | None:
        """How many classes the module tells apart, where the backend knows it."""
        return None

    def learn_steps(
        self, x: np.ndarray, y: np.ndarray, step: int, scaler: RunningScaler | None
    ) -> Classified | None:
        """:meth:`forward_backward` (scale 1, no replayed rows) then :meth:`step` on
        every ``step`` rows in turn, at once, where the backend can: each row's class
        and probability before its step. None (nothing done) where it cannot: the
        caller loops. ``scaler``: a ready one."""
        return None

    @abstractmethod
    def predict(self, x: np.ndarray, scaler: RunningScaler | None) -> Classified:
        """Class and probability per row of ``x`` (scaled by ``scaler``'s moments, if
        given), in eval mode, without gradients."""

    @abstractmethod
    def grads(self) -> list[A]:
        """The accumulated loss gradient, live."""

    @abstractmethod
    def params(self) -> list[A]:
        """The parameters, live."""

    @abstractmethod
    def tensors(self, arrays: list[A]) -> list[torch.Tensor]:
        """Arrays laid out like :meth:`params` as one tensor per module parameter (the
        layout snapshots carry), sharing their memory."""

    @abstractmethod
    def arrays(self, tensors: list[torch.Tensor]) -> list[A]:
        """The inverse of :meth:`tensors` (copies, where the layout differs)."""

    def snapshot(self, *, accumulating: bool) -> dict[str, Any]:
        """Weights, optimizer state and, when ``accumulating``, the gradient summed so
        far; live tensors (the caller copies or serializes)."""
        self._sync()
        return {
            "module": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "grads": self.tensors(self.grads()) if accumulating else None,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`snapshot` (of either backend); no ``grads`` (None)
        means no gradient accumulated."""
        self.module.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._restore_grads(state.get("grads") or [])

    def _sync(self) -> None:
        """Bring what the torch optimizer shows up to date (before a snapshot)."""

    @abstractmethod
    def _restore_grads(self, grads: list[torch.Tensor]) -> None:
        """After the optimizer's state is loaded: the accumulated gradient becomes
        ``grads`` (none: zero)."""


class AutogradBackend(Backend[torch.Tensor]):
    """Any module on any device: torch computes the gradients. Inputs move to
    ``device``; predictions come back to the host."""

    def __init__(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> None:
        super().__init__(module, optimizer)
        self.device = device
        self.loss_fn = nn.CrossEntropyLoss()

    def forward_backward(
        self,
        batch: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        scale: float,
        scaler: RunningScaler | None,
    ) -> tuple[Classified | None, float]:
        inputs = rows if scaler is None else scaler.scale_and_fold(batch, rows)
        if not self.module.training:
            self.module.train()
        xt = _tensor(inputs).to(self.device, non_blocking=True)
        yt = torch.from_numpy(targets).to(self.device, non_blocking=True)
        out = self.loss_fn(self.module(xt), yt)
        (out * scale).backward()
        return None, float(out.detach())

    def step(self) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad()

    def loss_of(
        self, inputs: np.ndarray, targets: np.ndarray
    ) -> Callable[[list[int]], torch.Tensor]:
        """The mean cross-entropy of the rows at given indices of ``inputs`` (already
        scaled): what a memory-budgeted trainer takes in micro-batches."""
        if not self.module.training:
            self.module.train()
        xt = _tensor(inputs)
        yt = torch.from_numpy(targets)

        def loss(rows: list[int]) -> torch.Tensor:
            index = torch.as_tensor(rows)
            x = xt.index_select(0, index).to(self.device, non_blocking=True)
            y = yt.index_select(0, index).to(self.device, non_blocking=True)
            return self.loss_fn(self.module(x), y)

        return loss

    def predict(self, x: np.ndarray, scaler: RunningScaler | None) -> Classified:
        if scaler is not None:
            x = scaler.transform(x)
        if self.module.training:
            self.module.eval()
        with torch.inference_mode():
            return classify_logits(self.module(_tensor(x).to(self.device, non_blocking=True)))

    def grads(self) -> list[torch.Tensor]:
        # a parameter the loss did not reach gets a zero gradient, which the
        # optimizer then steps like any other
        for p in self.module.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        return [p.grad.detach() for p in self.module.parameters()]  # type: ignore[union-attr]

    def params(self) -> list[torch.Tensor]:
        return [p.detach() for p in self.module.parameters()]

    def tensors(self, arrays: list[torch.Tensor]) -> list[torch.Tensor]:
        return arrays

    def arrays(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        return tensors

    def _restore_grads(self, grads: list[torch.Tensor]) -> None:
        for p in self.module.parameters():
            p.grad = None
        for p, g in zip(self.module.parameters(), grads, strict=bool(grads)):
            p.grad = g.clone()


class FusedBackend(Backend[np.ndarray]):
    """A plain MLP on the CPU through :class:`FusedMLP` (``kernel``); the arrays are
    its flat float32 buffers, one each."""

    def __init__(
        self, module: nn.Module, optimizer: torch.optim.Optimizer, linears: list[nn.Linear]
    ) -> None:
        super().__init__(module, optimizer)
        self.kernel = FusedMLP(linears, optimizer)

    def forward_backward(
        self,
        batch: np.ndarray,
        rows: np.ndarray,
        targets: np.ndarray,
        scale: float,
        scaler: RunningScaler | None,
    ) -> tuple[Classified | None, float]:
        # with moments to scale by, the kernel scales and folds the batch in itself
        ready = _ready(scaler)
        inputs = rows if scaler is None or ready is not None else scaler.scale_and_fold(batch, rows)
        pred, conf, loss = self.kernel.forward_backward(
            inputs, targets, scale, ready, fold=len(batch)
        )
        return (pred, conf), loss

    def shares_forward(self, scaler: RunningScaler | None) -> bool:
        # before its moments are ready the batch is scaled by its own, which a
        # prediction made before learning from it cannot use
        return scaler is None or scaler.ready

    def step(self) -> None:
        self.kernel.step()

    def learn_steps(
        self, x: np.ndarray, y: np.ndarray, step: int, scaler: RunningScaler | None
    ) -> Classified | None:
        return self.kernel.learn_steps(x, y, step, scaler)

    def classes(self) -> int | None:
        return int(self.kernel.sizes[-1])

    def predict(self, x: np.ndarray, scaler: RunningScaler | None) -> Classified:
        return self.kernel.classify(x, _ready(scaler))  # scales by the moments itself

    def grads(self) -> list[np.ndarray]:
        return [self.kernel.grad]

    def params(self) -> list[np.ndarray]:
        return [self.kernel.flat]

    def tensors(self, arrays: list[np.ndarray]) -> list[torch.Tensor]:
        return [torch.from_numpy(v) for flat in arrays for v in self.kernel.views(flat)]

    def arrays(self, tensors: list[torch.Tensor]) -> list[np.ndarray]:
        flat = np.concatenate([t.detach().numpy().ravel() for t in tensors])
        return [flat.astype(np.float32)]

    def _sync(self) -> None:
        self.kernel.sync_optimizer_state()

    def _restore_grads(self, grads: list[torch.Tensor]) -> None:
        self.kernel.load_optimizer_state()
        self.kernel.grad[...] = 0.0
        for view, g in zip(self.kernel.grad_views, grads, strict=bool(grads)):
            view[...] = g.numpy()


def make_backend(
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    kernel: Literal["auto", "autograd", "fused"],
    device: torch.device | None = None,
) -> Backend[Any]:
    """The fused backend where ``kernel`` allows it and it reproduces ``optimizer`` on
    ``module`` (a float32 CPU MLP), else autograd on ``device`` (default: the CPU);
    ``kernel="fused"`` on a module it cannot take is a ``ValueError``."""
    if kernel != "autograd":
        linears = mlp_linears(module)
        if linears is not None and optimizer_supported(optimizer):
            return FusedBackend(module, optimizer, linears)
        if kernel == "fused":
            msg = (
                "kernel='fused' needs a float32 CPU MLP (MLPClassifier, or nn.Sequential "
                f"of Linear and ReLU ending in Linear), got {type(module).__name__}"
            )
            raise ValueError(msg)
    return AutogradBackend(module, optimizer, device or torch.device("cpu"))


def _ready(scaler: RunningScaler | None) -> RunningScaler | None:
    """The scaler, if it has moments to scale by."""
    return scaler if scaler is not None and scaler.ready else None


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor sharing ``x``'s memory; read-only Arrow views are never written."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(x)
