"""Rolling key/value buffers for incremental decoding with sliding-window attention.

A decoder that attends to the last ``window`` positions (and, optionally, to the first
``sinks`` positions for ever: StreamingLLM's attention sinks) needs, per layer, the
keys and values of those positions only. :class:`KVCache` keeps them for a batch of
streams (one row each, every row at its own position) in fixed buffers of
``sinks + window`` slots a layer:

- position ``p < sinks`` lives in slot ``p`` for ever;
- position ``p >= sinks`` lives in slot ``sinks + (p - sinks) % window``, over the
  position ``window`` before it, which has just left the window.

Attention does not depend on the order of the slots (keys carry their position in
their rotary phase, see :mod:`model.streaming_transformer`), so the row attends to
every valid slot: exactly the positions a banded causal mask lets it see. Memory per
row is bounded: ``(sinks + window) x layers x 2 x d_model`` values, whatever the
stream's length. A row's buffers go to bytes and back (:meth:`snapshot`,
:meth:`restore`): per-key state for a stream processor.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CacheSpec:
    """The shape of a decoder's cache: ``layers`` x (keys, values) of ``heads`` x
    ``head_dim`` for ``sinks + window`` positions."""

    layers: int
    heads: int
    head_dim: int
    window: int
    sinks: int = 0
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        if min(self.layers, self.heads, self.head_dim, self.window) <= 0 or self.sinks < 0:
            msg = f"a cache needs positive layers, heads, head_dim and window, got {self}"
            raise ValueError(msg)

    @property
    def slots(self) -> int:
        return self.sinks + self.window

    @property
    def bytes_per_row(self) -> int:
        """The bound on one stream's cache: ``slots x layers x 2 x d_model`` values."""
        item = torch.empty((), dtype=self.dtype).element_size()
        return self.slots * self.layers * 2 * self.heads * self.head_dim * item

    def can_see(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """Whether position ``query`` attends to position ``key`` (broadcast): causal,
        within the window, or a sink."""
        return (key <= query) & ((query - key < self.window) | (key < self.sinks))


class KVCache:
    """Per layer keys and values of a batch of rows (see the module docstring).

    ``positions[b]``: the position row ``b`` decodes next (its length so far)."""

    def __init__(self, spec: CacheSpec, rows: int, device: torch.device | str = "cpu") -> None:
        self.spec = spec
        shape = (rows, spec.heads, spec.slots, spec.head_dim)
        self.keys = [
            torch.zeros(shape, dtype=spec.dtype, device=device) for _ in range(spec.layers)
        ]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.positions = torch.zeros(rows, dtype=torch.int64, device=device)

    @property
    def rows(self) -> int:
        return int(self.positions.shape[0])

    def slot(self) -> torch.Tensor:
        """Where each row's next position goes, shape ``[rows]``."""
        s, w, p = self.spec.sinks, self.spec.window, self.positions
        return torch.where(p < s, p, s + (p - s).remainder(w))

    def visible(self) -> torch.Tensor:
        """``[rows, slots]``: the slots each row's next position attends to, itself
        included (call after :meth:`write` of that position, before :meth:`advance`)."""
        s, w, p = self.spec.sinks, self.spec.window, self.positions.unsqueeze(1)
        index = torch.arange(self.spec.slots, device=p.device).unsqueeze(0)
        sink = (index < s) & (index <= p)
        filled = (p - s + 1).clamp(0, w)  # window slots written so far
        return sink | ((index >= s) & (index - s < filled))

    def held(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``([rows, slots] positions, [rows, slots] valid)``: which position each slot
        holds before the rows' next positions are written."""
        s, w = self.spec.sinks, self.spec.window
        p = self.positions.unsqueeze(1)
        index = torch.arange(self.spec.slots, device=p.device).unsqueeze(0)
        ring = p - 1 - (p - 1 - index).remainder(w)  # the newest position of each ring slot
        held = torch.where(index < s, index.expand_as(ring), ring)
        valid = torch.where(index < s, index < p, (ring >= s) & (ring >= p - w))
        return held, valid

    def write_block(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Put one row's ``T`` next positions (``[1, heads, T, head_dim]``): those that
        stay (sinks, and the last ``window`` of the others) go to their slots."""
        if self.rows != 1:
            raise ValueError("write_block takes one row's positions")
        s, w, p = self.spec.sinks, self.spec.window, int(self.positions[0])
        positions = torch.arange(p, p + keys.shape[2], device=keys.device)
        stay = (positions < s) | (positions >= max(s, p + keys.shape[2] - w))
        positions = positions[stay]
        slots = torch.where(positions < s, positions, s + (positions - s).remainder(w))
        self.keys[layer][0, :, slots] = keys[0][:, stay].to(self.spec.dtype)
        self.values[layer][0, :, slots] = values[0][:, stay].to(self.spec.dtype)

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> None:
        """Put the next position's ``key``/``value`` (``[rows, heads, head_dim]``)."""
        rows = torch.arange(self.rows, device=key.device)
        slot = self.slot()
        self.keys[layer][rows, :, slot] = key.to(self.spec.dtype)
        self.values[layer][rows, :, slot] = value.to(self.spec.dtype)

    def advance(self) -> None:
        self.positions += 1

    # -- rows --------------------------------------------------------------------
    def take(self, rows: torch.Tensor | list[int]) -> KVCache:
        """A cache of the given rows (copies)."""
        index = torch.as_tensor(rows, dtype=torch.int64, device=self.positions.device)
        out = KVCache.__new__(KVCache)
        out.spec = self.spec
        out.keys = [k.index_select(0, index) for k in self.keys]
        out.values = [v.index_select(0, index) for v in self.values]
        out.positions = self.positions.index_select(0, index)
        return out

    def put(self, rows: torch.Tensor | list[int], part: KVCache) -> None:
        """Write ``part``'s rows back into rows ``rows`` of this cache."""
        index = torch.as_tensor(rows, dtype=torch.int64, device=self.positions.device)
        for mine, theirs in zip(self.keys + self.values, part.keys + part.values, strict=True):
            mine.index_copy_(0, index, theirs)
        self.positions.index_copy_(0, index, part.positions)

    @classmethod
    def stack(cls, parts: list[KVCache]) -> KVCache:
        """One cache of the rows of ``parts``, in order (same spec)."""
        if not parts:
            raise ValueError("stack needs at least one cache")
        out = cls.__new__(cls)
        out.spec = parts[0].spec
        if any(p.spec != out.spec for p in parts):
            raise ValueError("caches of different specs do not stack")
        layers = range(out.spec.layers)
        out.keys = [torch.cat([p.keys[i] for p in parts]) for i in layers]
        out.values = [torch.cat([p.values[i] for p in parts]) for i in layers]
        out.positions = torch.cat([p.positions for p in parts])
        return out

    def snapshot(self, row: int = 0) -> bytes:
        """Row ``row``'s buffers and position as bytes (only the slots it filled)."""
        used = int(min(self.spec.slots, int(self.positions[row])))
        state = {
            "shape": self._shape(self.spec),
            "position": int(self.positions[row]),
            "keys": [k[row, :, :used].cpu().clone() for k in self.keys],
            "values": [v[row, :, :used].cpu().clone() for v in self.values],
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    @staticmethod
    def _shape(spec: CacheSpec) -> list[int]:
        """What a snapshot must match: layers, heads, head_dim, window, sinks."""
        return [spec.layers, spec.heads, spec.head_dim, spec.window, spec.sinks]

    @classmethod
    def restore(cls, spec: CacheSpec, data: bytes, device: torch.device | str = "cpu") -> KVCache:
        """A one-row cache from :meth:`snapshot`'s bytes."""
        state = torch.load(io.BytesIO(data), weights_only=True)
        if state.get("shape") != cls._shape(spec):
            msg = f"a snapshot of another cache shape: {state.get('shape')}, not {cls._shape(spec)}"
            raise ValueError(msg)
        out = cls(spec, 1, device)
        used = state["keys"][0].shape[1] if state["keys"] else 0
        for mine, saved in zip(out.keys + out.values, state["keys"] + state["values"], strict=True):
            mine[0, :, :used] = saved.to(device=device, dtype=spec.dtype)
        out.positions[0] = int(state["position"])
        return out
