"""Compressed updates with error feedback: top-k sparsification and 8-bit quantization.

A device sends its delta compressed; what the compression left out it keeps
(*error feedback*, Seide et al. 2014; Karimireddy et al. 2019) and adds to its next
delta, so nothing is lost for good, only late. :meth:`Compressor.encode` gives the
bytes sent (what :attr:`Compressed.nbytes` counts) and :func:`decode` the delta the
aggregator sees.

- :class:`TopK`: the ``fraction`` of coordinates largest in magnitude, as indices
  (uint16 for deltas of up to 65,536 coordinates, else uint32) and float16 values
  (what rounding loses, error feedback keeps);
- :class:`Quantize8`: every coordinate as an int8 step of ``max|x| / 127`` (one
  float32 scale per delta), rounded stochastically (unbiased) with a seeded generator.

>>> c = TopK(0.25)
>>> sent = c.encode(np.array([0.1, -3.0, 0.2, 1.0]))
>>> decode(sent).tolist(), sent.nbytes
([0.0, -3.0, 0.0, 0.0], 8)
>>> c.residual.tolist()  # kept for the next round
[0.10000000149011612, 0.0, 0.20000000298023224, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

HEADER = 4  # bytes: the coordinate count (int32), sent with every update


@dataclass(frozen=True)
class Compressed:
    """What a device sends: the encoding, its parts and the delta's length."""

    kind: str
    size: int
    parts: tuple[bytes, ...]

    @property
    def nbytes(self) -> int:
        return HEADER + sum(len(p) for p in self.parts)


class Compressor:
    """Error-feedback compression of one device's deltas."""

    def __init__(self) -> None:
        self.residual: np.ndarray | None = None

    def encode(self, delta: np.ndarray) -> Compressed:
        x = np.asarray(delta, np.float32).ravel()
        if self.residual is not None:
            x = x + self.residual
        sent = self._encode(x)
        self.residual = (x - decode(sent)).astype(np.float32)
        return sent

    def _encode(self, x: np.ndarray) -> Compressed:
        raise NotImplementedError

    def snapshot(self) -> dict[str, Any]:
        return {"residual": None if self.residual is None else self.residual.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        r = state["residual"]
        self.residual = None if r is None else np.asarray(r, np.float32).copy()


class Dense(Compressor):
    """No compression: float32 coordinates (the reference for the bytes saved)."""

    def _encode(self, x: np.ndarray) -> Compressed:
        return Compressed("dense", len(x), (x.astype(np.float32).tobytes(),))


class TopK(Compressor):
    """The largest ``fraction`` of the coordinates; with ``max_bytes``, no more than
    fit in that many bytes (a device's budget per update)."""

    def __init__(self, fraction: float, *, max_bytes: int | None = None) -> None:
        super().__init__()
        if not 0 < fraction <= 1:
            msg = f"fraction must be in (0, 1], got {fraction!r}"
            raise ValueError(msg)
        if max_bytes is not None and max_bytes < HEADER + 4:
            msg = f"max_bytes must be >= {HEADER + 4}, got {max_bytes!r}"
            raise ValueError(msg)
        self.fraction, self.max_bytes = fraction, max_bytes

    def _encode(self, x: np.ndarray) -> Compressed:
        k = max(1, round(self.fraction * len(x)))
        kind = np.uint16 if len(x) <= 1 << 16 else np.uint32
        if self.max_bytes is not None:  # an index and a float16 a coordinate
            per = np.dtype(kind).itemsize + 2
            k = max(1, min(k, (self.max_bytes - HEADER) // per))
        index = np.sort(np.argpartition(-np.abs(x), k - 1)[:k]).astype(kind)
        return Compressed("topk", len(x), (index.tobytes(), x[index].astype(np.float16).tobytes()))


class Quantize8(Compressor):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.rng = np.random.default_rng(seed)

    def _encode(self, x: np.ndarray) -> Compressed:
        top = float(np.abs(x).max()) if len(x) else 0.0
        scale = np.float32(top / 127 if top > 0 else 1.0)
        scaled = x / scale
        low = np.floor(scaled)
        q = low + (self.rng.random(len(x)) < scaled - low)  # unbiased rounding
        codes = np.clip(q, -127, 127).astype(np.int8)
        return Compressed("int8", len(x), (np.array([scale], np.float32).tobytes(),
                                           codes.tobytes()))  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        return {**super().snapshot(), "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.rng.bit_generator.state = state["rng"]


def decode(sent: Compressed) -> np.ndarray:
    """The delta the aggregator reconstructs (float32)."""
    if sent.kind == "dense":
        return np.frombuffer(sent.parts[0], np.float32).copy()
    if sent.kind == "topk":
        out = np.zeros(sent.size, np.float32)
        kind = np.uint16 if sent.size <= 1 << 16 else np.uint32
        out[np.frombuffer(sent.parts[0], kind)] = np.frombuffer(sent.parts[1], np.float16)
        return out
    if sent.kind == "int8":
        scale = np.frombuffer(sent.parts[0], np.float32)[0]
        return np.frombuffer(sent.parts[1], np.int8).astype(np.float32) * scale
    msg = f"unknown encoding {sent.kind!r}"
    raise ValueError(msg)


def make_compressor(kind: str, *, fraction: float = 0.01, seed: int = 0) -> Compressor:
    """``none``, ``topk`` (with ``fraction``) or ``int8``."""
    if kind == "none":
        return Dense()
    if kind == "topk":
        return TopK(fraction)
    if kind == "int8":
        return Quantize8(seed)
    msg = f"compression must be none, topk or int8, got {kind!r}"
    raise ValueError(msg)
