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
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

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
        buf = io.BytesIO()
        torch.save(module.state_dict(), buf)
        factory = factory or _MLPFactory.of(module)
        return cls("state_dict", version, factory, buf.getvalue(), trained_until_us)

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
                state = torch.load(io.BytesIO(self.data), map_location=device, weights_only=True)
                module.load_state_dict(state)
        return module.to(device).eval()


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
