"""What travels to the workers: a model version that can be built on any device.

Three ways to describe a model:

- ``state_dict``: a factory building the ``nn.Module`` plus its weights (bytes);
- ``torchscript``: a serialized TorchScript module (bytes), no Python class needed;
- ``factory``: a callable returning a ready ``nn.Module`` (weights included).

>>> from model.mlp import MLPClassifier
>>> art = ModelArtifact.from_module(MLPClassifier(3, seed=0), version=2)
>>> art.kind, art.version
('state_dict', 2)
>>> type(art.build(torch.device("cpu"))).__name__
'MLPClassifier'
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

Kind = Literal["state_dict", "torchscript", "factory"]


@dataclass(frozen=True)
class ModelArtifact:
    """A picklable, versioned model description. Build it with the classmethods."""

    kind: Kind
    version: int
    factory: Callable[[], nn.Module] | None = None
    data: bytes | None = None
    trained_until_us: int | None = None  # newest event time this version learned from

    def __post_init__(self) -> None:
        if self.version < 0:
            msg = f"model version must be >= 0, got {self.version!r}"
            raise ValueError(msg)
        needs = {"state_dict": (True, True), "torchscript": (False, True), "factory": (True, False)}
        if self.kind not in needs:
            msg = f"kind must be state_dict, torchscript or factory, got {self.kind!r}"
            raise ValueError(msg)
        need_factory, need_data = needs[self.kind]
        if need_factory != (self.factory is not None) or need_data != (self.data is not None):
            msg = f"a {self.kind} artifact needs factory={need_factory}, data={need_data}"
            raise ValueError(msg)

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        version: int,
        factory: Callable[[], nn.Module] | None = None,
        *,
        trained_until_us: int | None = None,
    ) -> ModelArtifact:
        """Capture ``module``'s weights. The factory defaults to rebuilding an
        ``MLPClassifier`` with the same shape; pass one for other module classes."""
        factory = factory or _MLPFactory.of(module)
        return cls(
            "state_dict", version, factory, weights_bytes(module.state_dict()), trained_until_us
        )

    @classmethod
    def torchscript(cls, module: nn.Module | torch.jit.ScriptModule, version: int) -> ModelArtifact:
        scripted = (
            module if isinstance(module, torch.jit.ScriptModule) else torch.jit.script(module)
        )
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        return cls("torchscript", version, data=buf.getvalue())

    @classmethod
    def from_factory(cls, factory: Callable[[], nn.Module], version: int) -> ModelArtifact:
        return cls("factory", version, factory=factory)

    def __sizeof__(self) -> int:
        """Roughly what it holds: its weights and a little more (a cache weighing a
        version need not walk its factory)."""
        return len(self.data or b"") + 256

    def fingerprint(self) -> tuple[str, int, str, bytes] | None:
        """What identifies the built module: kind, version, a digest of the weights and
        the pickled factory; None when the factory cannot be pickled by value (a lambda,
        a closure), so two artifacts can't be told apart safely."""
        try:
            factory = b"" if self.factory is None else pickle.dumps(self.factory)
        except (pickle.PicklingError, AttributeError, TypeError):
            return None
        digest = hashlib.blake2b(self.data or b"", digest_size=16).hexdigest()
        return self.kind, self.version, digest, factory

    def build(self, device: torch.device) -> nn.Module:
        """The module on ``device``, in eval mode."""
        if self.kind == "torchscript":
            assert self.data is not None
            module: nn.Module = torch.jit.load(io.BytesIO(self.data), map_location=device)
        else:
            assert self.factory is not None
            module = self.factory()
            if self.kind == "state_dict":
                assert self.data is not None
                module.load_state_dict(weights_of(self.data, device))
        return module.to(device).eval()


_RAW = b"SML-weights1\n"
_DTYPES = {
    torch.float32: "<f4",
    torch.float64: "<f8",
    torch.float16: "<f2",
    torch.int64: "<i8",
    torch.int32: "<i4",
    torch.int16: "<i2",
    torch.int8: "i1",
    torch.uint8: "u1",
    torch.bool: "?",
}


def weights_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict's bytes: a JSON header (name, dtype, shape) and each tensor's raw
    bytes, so a version is written and read by a copy each (``torch.save`` and its
    safe loader cost about a millisecond a version, which a sparse stream publishing
    thousands of versions pays thousands of times). Not code: safe to read from any
    file, as ``weights_only`` loading is. Tensors of other dtypes or layouts fall back
    to ``torch.save``.

    >>> back = weights_of(weights_bytes({"w": torch.arange(3.0)}), torch.device("cpu"))
    >>> back["w"].tolist()
    [0.0, 1.0, 2.0]
    """
    arrays = []
    for name, tensor in state.items():
        code = _DTYPES.get(tensor.dtype)
        if code is None or tensor.layout != torch.strided or tensor.is_quantized:
            buf = io.BytesIO()
            torch.save(state, buf)
            return buf.getvalue()
        arrays.append((name, code, tensor.detach().cpu().contiguous().numpy()))
    header = json.dumps([(n, c, list(a.shape)) for n, c, a in arrays]).encode()
    body = b"".join(a.tobytes() for _, _, a in arrays)
    return _RAW + len(header).to_bytes(4, "little") + header + body


def weights_of(data: bytes, device: torch.device) -> dict[str, torch.Tensor]:
    """The state dict :func:`weights_bytes` wrote (or ``torch.save`` did: older
    versions, in model stores, still load)."""
    if not data.startswith(_RAW):
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    at = len(_RAW)
    size = int.from_bytes(data[at : at + 4], "little")
    header = json.loads(data[at + 4 : at + 4 + size])
    at += 4 + size
    state: dict[str, torch.Tensor] = {}
    for name, code, shape in header:
        dtype = np.dtype(code)
        count = math.prod(shape)
        array = np.frombuffer(data, dtype=dtype, count=count, offset=at).reshape(shape)
        state[name] = torch.from_numpy(array.copy()).to(device)
        at += count * dtype.itemsize
    return state


@dataclass(frozen=True)
class _MLPFactory:
    """A picklable factory for :class:`model.mlp.MLPClassifier`."""

    in_features: int
    hidden: tuple[int, ...]
    num_classes: int

    @classmethod
    def of(cls, module: nn.Module) -> _MLPFactory:
        from model.mlp import MLPClassifier

        if not isinstance(module, MLPClassifier):
            msg = f"pass a factory for {type(module).__name__} (only MLPClassifier is inferred)"
            raise TypeError(msg)
        return cls(module.in_features, module.hidden, module.num_classes)

    def __call__(self) -> nn.Module:
        from model.mlp import MLPClassifier

        return MLPClassifier(self.in_features, self.hidden, self.num_classes)
