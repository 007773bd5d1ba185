"""A fused CPU training step for plain MLP classifiers.

Autograd costs a few microseconds of dispatch per operation, which dominates a
training step on a micro-batch of a hundred rows through a small MLP (about 0.5 ms
per step here). :class:`FusedMLP` does the same step with hand-derived gradients in
numpy over one flat float32 buffer: the module's parameters become views of it, so
the ``nn.Module`` stays the single source of truth (``state_dict``, export, deep
copies all see the trained weights), and the optimizer state (Adam moments, SGD
momentum) lives in views registered in the torch optimizer, so its ``state_dict``
round-trips with the autograd path. The update rules are torch's own (``Adam`` with
bias correction, ``SGD`` with momentum, no dampening), checked against autograd in
the tests.

It applies to ``MLPClassifier`` and to ``nn.Sequential`` stacks of ``Linear`` and
``ReLU`` ending in a ``Linear`` (float32, on the CPU); :func:`mlp_linears` says
whether a module qualifies.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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

    def __init__(self, linears: list[nn.Linear], optimizer: torch.optim.Optimizer) -> None:
        self.params: list[torch.Tensor] = [p for lin in linears for p in (lin.weight, lin.bias)]
        sizes = [p.numel() for p in self.params]
        self.flat = np.empty(sum(sizes), np.float32)
        self.grad = np.zeros_like(self.flat)
        self.param_views = self._views(self.flat)
        self.grad_views = self._views(self.grad)
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
        self.load_optimizer_state()

    def _views(self, flat: np.ndarray) -> list[np.ndarray]:
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
        for name in names:
            flat = np.zeros_like(self.flat)
            views = self._views(flat)
            present = all(state.get(p, {}).get(name) is not None for p in self.params)
            if present:
                for p, view in zip(self.params, views, strict=True):
                    view[...] = state[p][name].detach().cpu().numpy()
                self.buffers[name] = flat
        self._register()

    def _register(self) -> None:
        if not self.buffers:
            return
        views = {name: self._views(flat) for name, flat in self.buffers.items()}
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

    def forward_backward(
        self, x: np.ndarray, y: np.ndarray, scale: float
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Predicted class and its probability for every row of ``x`` (before the
        step), and the mean cross-entropy; adds ``scale`` times its gradient to the
        gradient buffer."""
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

    def step(self) -> None:
        """One optimizer step from the gradient buffer, then clear it."""
        group = self.optimizer.param_groups[0]
        lr = float(group["lr"])
        g = self.grad
        wd = float(group.get("weight_decay", 0.0))
        if wd:
            g = g + wd * self.flat
        self.t += 1
        first = not self.buffers
        if self.kind == "adam":
            beta1, beta2 = group["betas"]
            if first:
                zeros = np.zeros_like
                self.buffers = {"exp_avg": zeros(self.flat), "exp_avg_sq": zeros(self.flat)}
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
                if first:
                    self.buffers = {"momentum_buffer": g.copy()}
                else:
                    buf = self.buffers["momentum_buffer"]
                    buf *= momentum
                    buf += g
                g = self.buffers["momentum_buffer"]
            self.flat -= lr * g
        if first:
            self._register()
        self.grad[...] = 0.0
