"""A fused CPU training step for plain MLP classifiers.

Autograd pays a dispatch cost per operation, which dominates a training step on a
micro-batch of a hundred rows through a small MLP. :class:`FusedMLP` does the same
step with hand-derived gradients in numpy over one flat float32 buffer: the module's
parameters become views of it, so the ``nn.Module`` stays the single source of truth
(``state_dict``, export, deep copies all see the trained weights), and the optimizer
state (Adam moments, SGD momentum) lives in views registered in the torch optimizer,
so its ``state_dict`` round-trips with the autograd path. The update rules are
torch's own (``Adam`` with bias correction, ``SGD`` with momentum, no dampening),
checked against autograd in the tests.

It applies to ``MLPClassifier`` and to ``nn.Sequential`` stacks of ``Linear`` and
``ReLU`` ending in a ``Linear`` (float32, on the CPU); :func:`mlp_linears` says
whether a module qualifies.

Where a C compiler is available the step runs in C (:mod:`model.learn.native`): one
call for forward, loss and backward, one for the optimizer, instead of about forty
numpy calls (each with its own fixed cost). The numpy code is the fallback and the
reference; both follow the same order of operations per element.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from model.learn import native
from model.learn.native import NativeMLP, StepRule, check_width, label_error
from model.learn.scaler import RunningScaler
from model.mlp import MLPClassifier


def mlp_linears(module: nn.Module) -> list[nn.Linear] | None:
    """The ``Linear`` layers of a plain MLP on the CPU, or None if ``module`` is not one."""
    seq = module.net if type(module) is MLPClassifier else module
    if type(seq) is not nn.Sequential:
        return None
    layers = list(seq)
    if len(layers) % 2 == 0:
        return None
    for i, layer in enumerate(layers):
        if type(layer) is not (nn.Linear if i % 2 == 0 else nn.ReLU):
            return None
    linears: list[nn.Linear] = layers[::2]  # type: ignore[assignment]
    params = list(module.parameters())
    expected = [p for lin in linears for p in (lin.weight, lin.bias)]
    if any(lin.bias is None for lin in linears) or len(params) != len(expected):
        return None
    if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
        return None
    if not all(p.requires_grad for p in params):  # frozen layers: autograd handles them
        return None
    return linears


def optimizer_supported(optimizer: torch.optim.Optimizer) -> bool:
    """Whether :meth:`FusedMLP.step` reproduces ``optimizer``: plain ``Adam`` or ``SGD``
    (optionally with momentum and L2 weight decay), one parameter group."""
    if len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    if group.get("maximize") or group.get("differentiable"):
        return False
    if type(optimizer) is torch.optim.Adam:
        return not group.get("amsgrad") and not group.get("decoupled_weight_decay")
    if type(optimizer) is torch.optim.SGD:
        return not group.get("nesterov") and not group.get("dampening")
    return False


class FusedMLP:
    """Forward, backward and optimizer step of an MLP over one flat buffer."""

    def __init__(
        self,
        linears: list[nn.Linear],
        optimizer: torch.optim.Optimizer,
        *,
        use_native: bool | None = None,
    ) -> None:
        """``use_native``: None uses the C kernels when they can be built, True
        requires them, False keeps to numpy."""
        self.lib = None if use_native is False else native.mlp_library()
        if use_native and self.lib is None:
            msg = "the C kernels are unavailable (see the log for why)"
            raise RuntimeError(msg)
        self.params: list[torch.Tensor] = [p for lin in linears for p in (lin.weight, lin.bias)]
        sizes = [p.numel() for p in self.params]
        self.flat = np.empty(sum(sizes), np.float32)
        self.grad = np.zeros_like(self.flat)
        self.param_views = self.views(self.flat)
        self.grad_views = self.views(self.grad)
        with torch.no_grad():
            for p, view in zip(self.params, self.param_views, strict=True):
                view[...] = p.detach().numpy()
                p.data = torch.from_numpy(view)
        self.weights = self.param_views[0::2]
        self.biases = self.param_views[1::2]
        self.optimizer = optimizer
        self.kind = "adam" if isinstance(optimizer, torch.optim.Adam) else "sgd"
        self.buffers: dict[str, np.ndarray] = {}
        self.t = 0
        self.sizes = np.array(
            [linears[0].in_features] + [lin.out_features for lin in linears], np.int32
        )
        self.io = (
            None if self.lib is None else NativeMLP(self.lib, self.sizes, self.flat, self.grad)
        )
        self._opt_ptrs: tuple[int, ...] | None = None
        self.load_optimizer_state()

    def views(self, flat: np.ndarray) -> list[np.ndarray]:
        """Per-parameter views (shaped like the parameters) of a flat array."""
        out, offset = [], 0
        for p in self.params:
            n = p.numel()
            out.append(flat[offset : offset + n].reshape(tuple(p.shape)))
            offset += n
        return out

    # -- optimizer state, shared with the torch optimizer ---------------------------
    def load_optimizer_state(self) -> None:
        """Adopt the torch optimizer's state (after construction or ``load_state_dict``)
        and register views of this kernel's buffers in its place."""
        names = ("exp_avg", "exp_avg_sq") if self.kind == "adam" else ("momentum_buffer",)
        state = self.optimizer.state
        first = state.get(self.params[0], {})
        self.t = int(first["step"]) if "step" in first else 0
        self.buffers = {}
        self._opt_ptrs = None
        for name in names:
            flat = np.zeros_like(self.flat)
            views = self.views(flat)
            present = all(state.get(p, {}).get(name) is not None for p in self.params)
            if present:
                for p, view in zip(self.params, views, strict=True):
                    view[...] = state[p][name].detach().cpu().numpy()
                self.buffers[name] = flat
        self._register()

    def _register(self) -> None:
        if not self.buffers:
            return
        views = {name: self.views(flat) for name, flat in self.buffers.items()}
        for i, p in enumerate(self.params):
            entry = self.optimizer.state[p]
            for name, vs in views.items():
                entry[name] = torch.from_numpy(vs[i])
            if self.kind == "adam":
                entry["step"] = torch.tensor(float(self.t), dtype=torch.float32)

    def sync_optimizer_state(self) -> None:
        """Bring the step counters the torch optimizer shows up to date."""
        if self.kind == "adam" and self.buffers:
            for p in self.params:
                self.optimizer.state[p]["step"].fill_(float(self.t))

    # -- compute --------------------------------------------------------------------
    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits and the input of every layer (for the backward pass)."""
        inputs = [x]
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            z = h @ w.T
            z += b
            if i < last:
                np.maximum(z, 0.0, out=z)
                inputs.append(z)
            h = z
        return h, inputs

    def classify(
        self, x: np.ndarray, scaler: RunningScaler | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Predicted class and its probability for every row of ``x`` (scaled by
        ``scaler``'s moments first, if given: one that has seen two rows)."""
        _check_scaler(scaler, int(self.sizes[0]))
        if self.io is None:
            return classify_numpy(self.forward(x if scaler is None else scaler.transform(x))[0])
        return self.io.classify(x, scaler)

    def forward_backward(
        self,
        x: np.ndarray,
        y: np.ndarray,
        scale: float,
        scaler: RunningScaler | None = None,
        fold: int = 0,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Predicted class and its probability for every row of ``x`` (before the
        step), and the mean cross-entropy; adds ``scale`` times its gradient to the
        gradient buffer. With ``scaler`` (one that has seen two rows) the rows are
        scaled by its moments, and then its first ``fold`` rows, raw, are folded
        into them."""
        if len(y) != len(x):
            msg = f"{len(x)} rows but {len(y)} labels"
            raise ValueError(msg)
        _check_scaler(scaler, int(self.sizes[0]))
        if self.io is not None:
            return self.io.learn(x, y, scale, scaler, fold)
        check_width(x, int(self.sizes[0]))
        if len(y) and (y.min() < 0 or y.max() >= self.sizes[-1]):
            raise ValueError(label_error(y, int(self.sizes[-1])))
        if scaler is not None:
            raw, x = x, scaler.transform(x)
            scaler.update(raw[:fold])
        logits, inputs = self.forward(x)
        n = len(x)
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        classes = z.argmax(axis=1).astype(np.int64)
        conf = (1.0 / s[:, 0]).astype(np.float32)  # the top class has exp(0) = 1
        rows = np.arange(n)
        loss = float(np.mean(np.log(s[:, 0]) - z[rows, y]))
        g = e / s
        g[rows, y] -= 1.0
        g *= scale / n
        for i in range(len(self.weights) - 1, -1, -1):
            a = inputs[i]
            self.grad_views[2 * i] += g.T @ a
            self.grad_views[2 * i + 1] += g.sum(axis=0)
            if i:
                g = g @ self.weights[i]
                g *= a > 0
        return classes, conf, loss

    def learn_steps(
        self, x: np.ndarray, y: np.ndarray, step: int, scaler: RunningScaler | None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`forward_backward` (scale 1, the scaler folding each step's rows) and
        :meth:`step` on every ``step`` rows of ``x`` in turn, in one call of the C
        kernels: the same bits as that loop. Every row's class and probability before
        its step; None, with nothing done, where the loop must run from Python (no C
        kernels, or an optimizer whose buffers its first step starts)."""
        if self.io is None or len(x) == 0:
            return None
        if len(y) != len(x):
            msg = f"{len(x)} rows but {len(y)} labels"
            raise ValueError(msg)
        _check_scaler(scaler, int(self.sizes[0]))
        group = self.optimizer.param_groups[0]
        lr, wd = float(group["lr"]), float(group.get("weight_decay", 0.0))
        if self._opt_ptrs is None:
            self._opt_ptrs = tuple(b.ctypes.data for b in self.buffers.values())
        if self.kind == "adam":
            if not self.buffers:
                return None
            beta1, beta2 = group["betas"]
            m, v = self._opt_ptrs
            rule = StepRule(0, lr, wd, m, v, beta1, beta2, float(group["eps"]), t0=self.t)
        else:
            momentum = float(group.get("momentum", 0.0))
            if momentum and not self.buffers:
                return None
            buf = self._opt_ptrs[0] if self._opt_ptrs else None
            rule = StepRule(1, lr, wd, buf, momentum=momentum)
        cls, conf, steps = self.io.steps(x, y, step, scaler, rule)
        self.t += steps
        return cls, conf

    def step(self) -> None:
        """One optimizer step from the gradient buffer, then clear it."""
        group = self.optimizer.param_groups[0]
        lr = float(group["lr"])
        wd = float(group.get("weight_decay", 0.0))
        self.t += 1
        first = not self.buffers
        if first:
            self._start_buffers(group)
        if self.io is not None:
            self._step_native(group, lr, wd, first)
        else:
            self._step_numpy(group, lr, wd, first)
        if first:
            self._register()

    def _step_numpy(self, group: dict, lr: float, wd: float, first: bool) -> None:
        g = self.grad
        if wd:
            g = g + wd * self.flat
        if self.kind == "adam":
            beta1, beta2 = group["betas"]
            m, v = self.buffers["exp_avg"], self.buffers["exp_avg_sq"]
            m += (1.0 - beta1) * (g - m)
            v *= beta2
            v += (1.0 - beta2) * g * g
            bias1 = 1.0 - beta1**self.t
            bias2 = 1.0 - beta2**self.t
            denom = np.sqrt(v)
            denom /= np.sqrt(bias2)
            denom += group["eps"]
            self.flat -= (lr / bias1) * m / denom
        else:
            momentum = float(group.get("momentum", 0.0))
            if momentum:
                buf = self.buffers["momentum_buffer"]
                if first:  # torch's rule: the buffer starts as the gradient
                    buf[...] = g
                else:
                    buf *= momentum
                    buf += g
                g = buf
            self.flat -= lr * g
        self.grad[...] = 0.0

    def _start_buffers(self, group: dict) -> None:
        """The optimizer's buffers at its first step (Adam's moments at zero; SGD's
        momentum, filled by the step itself); none for plain SGD."""
        if self.kind == "adam":
            self.buffers = {
                "exp_avg": np.zeros_like(self.flat),
                "exp_avg_sq": np.zeros_like(self.flat),
            }
        elif group.get("momentum"):
            self.buffers = {"momentum_buffer": np.empty_like(self.flat)}
        self._opt_ptrs = None

    def _step_native(self, group: dict, lr: float, wd: float, first: bool) -> None:
        assert self.io is not None
        if self._opt_ptrs is None:
            self._opt_ptrs = tuple(b.ctypes.data for b in self.buffers.values())
        if self.kind == "adam":
            beta1, beta2 = group["betas"]
            self.io.adam(
                self._opt_ptrs, lr / (1.0 - beta1**self.t), beta1, beta2,
                math.sqrt(1.0 - beta2**self.t), group["eps"], wd,
            )  # fmt: skip
        else:
            momentum = float(group.get("momentum", 0.0))
            buf = self._opt_ptrs[0] if self._opt_ptrs else None
            self.io.sgd(buf, lr, momentum, wd, first)


def _check_scaler(scaler: RunningScaler | None, width: int) -> None:
    """A scaler must be ready and as wide as the input: the C code would otherwise
    write past the end of its moments."""
    if scaler is None:
        return
    if not scaler.ready or scaler.mean is None or len(scaler.mean) != width:
        seen = None if scaler.mean is None else len(scaler.mean)
        msg = f"the scaler must have seen two rows of {width} features (has {seen}, n={scaler.n})"
        raise ValueError(msg)


def classify_numpy(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Argmax class and its softmax probability per row."""
    top = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - top)
    conf = (1.0 / e.sum(axis=1)).astype(np.float32)  # the top class has exp(0) = 1
    return logits.argmax(axis=1).astype(np.int64), conf
