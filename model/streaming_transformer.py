"""A causal Transformer decoder over a stream of values, decoded one step at a time.

Sliding-window attention of width ``window`` (each position sees itself and the
``window - 1`` before it), optional attention sinks (the first ``sinks`` positions,
seen for ever: StreamingLLM), rotary positions (a key's phase is its absolute
position, so a cached key stays valid however far the window has slid). Two ways to
run it, equal to float rounding:

- :meth:`StreamingTransformer.forward`: a full pass over a sequence with the banded
  causal mask (training, and the reference);
- :meth:`StreamingTransformer.step`: one new value for each of many streams at once,
  each at its own position, against a :class:`~model.kv_cache.KVCache` of rolling
  buffers: ``O(window)`` work and memory per stream and step, not ``O(length)``.

Each output forecasts the next value of its stream (``d_out`` values).

>>> import torch
>>> net = StreamingTransformer(d_in=1, window=4, seed=0)
>>> x = torch.randn(2, 6, 1)
>>> cache = net.new_cache(2)
>>> steps = torch.stack([net.step(x[:, t], cache) for t in range(6)], dim=1)
>>> bool(torch.allclose(steps, net(x), atol=1e-5))
True
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from model.kv_cache import CacheSpec, KVCache
from model.seeding import seeded

ROTARY_BASE = 10_000.0


Phase = tuple[torch.Tensor, torch.Tensor]


def phase(positions: torch.Tensor, head_dim: int, dtype: torch.dtype) -> Phase:
    """The rotary phase of each position (``cos`` and ``sin``, ``[..., head_dim //
    2]``): pairs of dimensions rotate by ``position x frequency``. Angles in float64:
    exact for positions far into a long stream. Computed once a pass, for every
    layer's queries and keys."""
    half = head_dim // 2
    freq = ROTARY_BASE ** (-torch.arange(half, dtype=torch.float64, device=positions.device) / half)
    angle = positions.to(torch.float64).unsqueeze(-1) * freq
    return angle.cos().to(dtype), angle.sin().to(dtype)


def turn(x: torch.Tensor, by: Phase) -> torch.Tensor:
    """``x`` (``[..., T, head_dim]``) turned by the phase ``by`` (broadcast)."""
    cos, sin = by
    half = cos.shape[-1]
    a, b = x[..., :half], x[..., half : 2 * half]
    turned = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return torch.cat([turned, x[..., 2 * half :]], dim=-1)


def rotary(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``x`` (``[..., T, head_dim]``) turned by the rotary phase of each position
    (``positions`` broadcast against ``[..., T]``), so ``q . k`` depends on the
    distance of their positions only."""
    return turn(x, phase(positions, x.shape[-1], x.dtype))


class _Block(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)
        )

    def _qkv(self, h: torch.Tensor, by: Phase) -> tuple[torch.Tensor, ...]:
        """Queries, keys (both turned by ``by``, ``[B or 1, 1, T, half]``) and values:
        ``[B, heads, T, head_dim]``."""
        b, t, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        return turn(q, by), turn(k, by), v

    def _finish(self, h: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = attended.shape
        h = h + self.out(attended.transpose(1, 2).reshape(b, t, -1))
        return h + self.mlp(self.norm2(h))

    def forward(self, h: torch.Tensor, by: Phase, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(h, by)
        return self._finish(h, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))

    def extend(
        self, h: torch.Tensor, cache: KVCache, layer: int, positions: torch.Tensor, by: Phase
    ) -> torch.Tensor:
        """``h``: ``[1, T, d_model]``, one row's ``T`` next positions at once
        (``positions``, turned by ``by``): they attend to the cache's slots and to
        each other (chunked prefill)."""
        t = h.shape[1]
        q, k, v = self._qkv(h, by)
        held, valid = cache.held()
        seen = torch.cat([held[0], positions])
        mask = cache.spec.can_see(positions.unsqueeze(1), seen.unsqueeze(0))
        mask &= torch.cat([valid[0], torch.ones(t, dtype=torch.bool, device=h.device)])
        keys = torch.cat([cache.keys[layer][:1].to(q.dtype), k], dim=2)
        values = torch.cat([cache.values[layer][:1].to(q.dtype), v], dim=2)
        out = self._finish(h, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask))
        cache.write_block(layer, k, v)
        return out

    def step(self, h: torch.Tensor, cache: KVCache, layer: int, by: Phase) -> torch.Tensor:
        """``h``: ``[B, 1, d_model]``, the rows' next position (turned by ``by``)."""
        q, k, v = self._qkv(h, by)
        cache.write(layer, k[:, :, 0], v[:, :, 0])
        mask = cache.visible()[:, None, None, :]  # [B, 1, 1, slots]
        keys, values = cache.keys[layer].to(q.dtype), cache.values[layer].to(q.dtype)
        return self._finish(h, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask))


class StreamingTransformer(nn.Module):
    """A causal decoder with sliding-window attention and rotary positions (see the
    module docstring). With ``seed`` the initial weights are a function of it alone."""

    def __init__(
        self,
        d_in: int = 1,
        d_model: int = 32,
        heads: int = 4,
        layers: int = 2,
        window: int = 64,
        sinks: int = 0,
        d_out: int | None = None,
        *,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if d_in <= 0 or d_model % heads or (d_model // heads) % 2 or layers <= 0:
            msg = (
                "need d_in > 0, layers > 0 and d_model / heads an even whole number, got "
                f"d_in={d_in!r}, d_model={d_model!r}, heads={heads!r}, layers={layers!r}"
            )
            raise ValueError(msg)
        self.spec = CacheSpec(layers, heads, d_model // heads, window, sinks)
        with seeded(seed):
            self.embed = nn.Linear(d_in, d_model)
            self.blocks = nn.ModuleList(_Block(d_model, heads) for _ in range(layers))
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, d_out or d_in)

    @property
    def reach(self) -> int:
        """How many of the latest inputs (besides the sinks) an output depends on:
        each layer sees ``window - 1`` positions further back."""
        return self.spec.layers * (self.spec.window - 1) + 1

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Full pass: ``x`` ``[B, T, d_in]`` at ``positions`` (``[T]``, increasing;
        default ``0..T-1``) to ``[B, T, d_out]``, each position seeing what the banded
        causal mask lets it see among the given ones."""
        t = x.shape[1]
        if positions is None:
            positions = torch.arange(t, device=x.device)
        mask = self.spec.can_see(positions.unsqueeze(1), positions.unsqueeze(0))
        h = self.embed(x)
        by = self._phase(positions.view(1, 1, t), h.dtype)
        for block in self.blocks:
            h = block(h, by, mask)
        return self.head(self.norm(h))

    def _phase(self, positions: torch.Tensor, dtype: torch.dtype) -> Phase:
        return phase(positions, self.spec.head_dim, dtype)

    def new_cache(self, rows: int) -> KVCache:
        device = next(self.parameters()).device
        return KVCache(self.spec, rows, device)

    @torch.no_grad()
    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new value per row (``x`` ``[rows, d_in]``): each row's forecast
        ``[rows, d_out]``; the cache moves on by one position."""
        h = self.embed(x).unsqueeze(1)
        by = self._phase(cache.positions.view(-1, 1, 1), h.dtype)  # [B, 1, 1, half]
        for i, block in enumerate(self.blocks):
            h = cast(_Block, block).step(h, cache, i, by)
        cache.advance()
        return self.head(self.norm(h))[:, 0]

    @torch.no_grad()
    def extend(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One row's ``T`` new values at once (``x`` ``[T, d_in]``, a one-row
        ``cache``): their forecasts ``[T, d_out]``, as ``T`` calls of :meth:`step`
        give; the cache moves on by ``T`` positions."""
        h = self.embed(x).unsqueeze(0)
        positions = cache.positions[:1] + torch.arange(x.shape[0], device=h.device)
        by = self._phase(positions.view(1, 1, -1), h.dtype)
        for i, block in enumerate(self.blocks):
            h = cast(_Block, block).extend(h, cache, i, positions, by)
        cache.positions += x.shape[0]
        return self.head(self.norm(h))[0]

    @torch.no_grad()
    def recompute(self, history: torch.Tensor) -> torch.Tensor:
        """The last output of a stream from its inputs alone (``history``
        ``[B, T, d_in]``, positions ``0..T-1``): a full pass over the sinks and the
        :attr:`reach` latest inputs, what decoding without a cache costs per event."""
        t = history.shape[1]
        start = max(self.spec.sinks, t - self.reach)
        keep = torch.cat([torch.arange(min(self.spec.sinks, t)), torch.arange(start, t)])
        return self.forward(history[:, keep], keep.to(history.device))[:, -1]
