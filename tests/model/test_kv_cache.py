"""The streaming Transformer's rolling KV cache: incremental decoding equals the full
banded pass, rows at their own positions, snapshots, bounded memory."""

from __future__ import annotations

import pytest
import torch

from model.kv_cache import CacheSpec, KVCache
from model.streaming_transformer import StreamingTransformer, rotary


def _decode(net: StreamingTransformer, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
    return torch.stack([net.step(x[:, t], cache) for t in range(x.shape[1])], dim=1)


@pytest.mark.parametrize(("window", "sinks", "layers"), [(4, 0, 1), (5, 2, 3), (8, 3, 2)])
def test_incremental_decoding_equals_the_full_banded_pass(window, sinks, layers):
    net = StreamingTransformer(d_in=3, window=window, sinks=sinks, layers=layers, seed=1)
    x = torch.randn(3, 6 * window, 3, generator=torch.Generator().manual_seed(2))
    full = net(x).detach()
    steps = _decode(net, x, net.new_cache(3))
    assert torch.allclose(steps, full, atol=1e-5)
    # the window does bound what a position sees: without it the pass differs
    wide = StreamingTransformer(d_in=3, window=10 * window, sinks=sinks, layers=layers, seed=1)
    assert not torch.allclose(wide(x), full, atol=1e-3)


def test_a_sink_is_seen_for_ever_and_the_window_forgets():
    spec = CacheSpec(layers=1, heads=1, head_dim=2, window=3, sinks=2)
    q, k = torch.tensor(10), torch.arange(12)
    assert spec.can_see(q, k).tolist() == [True, True] + [False] * 6 + [True] * 3 + [False]


def test_rows_at_their_own_positions_decode_as_alone():
    net = StreamingTransformer(d_in=1, window=6, sinks=1, layers=2, seed=3)
    x = torch.randn(2, 20, 1, generator=torch.Generator().manual_seed(4))
    cache = net.new_cache(2)
    ahead = cache.take([0])
    _decode(net, x[:1, :7], ahead)  # the first row has 7 values before the second starts
    cache.put([0], ahead)
    assert cache.positions.tolist() == [7, 0]
    together = torch.stack(
        [net.step(torch.stack([x[0, 7 + t], x[1, t]]), cache) for t in range(13)]
    )
    assert torch.allclose(together[:, 0], net(x[:1])[0, 7:], atol=1e-5)
    assert torch.allclose(together[:, 1], net(x[1:, :13])[0], atol=1e-5)


def test_a_snapshot_resumes_where_it_stopped():
    net = StreamingTransformer(d_in=2, window=5, sinks=2, seed=5)
    x = torch.randn(1, 30, 2, generator=torch.Generator().manual_seed(6))
    for stop in (1, 4, 17):  # before the sinks fill, inside the window, after wrapping
        cache = net.new_cache(1)
        _decode(net, x[:, :stop], cache)
        restored = KVCache.restore(net.spec, cache.snapshot(0))
        assert int(restored.positions[0]) == stop
        assert torch.allclose(_decode(net, x[:, stop:], restored), net(x)[:, stop:], atol=1e-5)


def test_a_snapshot_of_another_shape_is_refused():
    small = StreamingTransformer(d_in=1, window=4, layers=1, seed=0)
    cache = small.new_cache(1)
    _decode(small, torch.zeros(1, 3, 1), cache)
    with pytest.raises(ValueError, match="another cache shape"):
        KVCache.restore(CacheSpec(layers=2, heads=4, head_dim=8, window=4), cache.snapshot(0))
    wider = CacheSpec(layers=1, heads=4, head_dim=8, window=16)  # only the window differs
    with pytest.raises(ValueError, match="another cache shape"):
        KVCache.restore(wider, cache.snapshot(0))


def test_memory_per_stream_is_bounded_by_the_window():
    net = StreamingTransformer(d_in=1, d_model=16, heads=2, window=8, sinks=2, layers=2, seed=0)
    cache = net.new_cache(4)
    held = sum(t.numel() * t.element_size() for t in cache.keys + cache.values)
    _decode(net, torch.randn(4, 200, 1), cache)
    assert sum(t.numel() * t.element_size() for t in cache.keys + cache.values) == held
    assert held == 4 * net.spec.bytes_per_row == 4 * (2 + 8) * 2 * 2 * 16 * 4


def test_recomputing_the_reach_gives_the_cached_output():
    net = StreamingTransformer(d_in=1, window=4, sinks=2, layers=3, seed=7)
    x = torch.randn(2, 40, 1, generator=torch.Generator().manual_seed(8))
    steps = _decode(net, x, net.new_cache(2))
    for t in (1, 5, 13, 39):
        assert torch.allclose(net.recompute(x[:, : t + 1]), steps[:, t], atol=1e-5)


def test_rotary_attention_depends_on_distance_only():
    q, k = torch.randn(1, 1, 8), torch.randn(1, 1, 8)
    near = (rotary(q, torch.tensor([7])) * rotary(k, torch.tensor([3]))).sum()
    far = (rotary(q, torch.tensor([1_000_004])) * rotary(k, torch.tensor([1_000_000]))).sum()
    assert torch.allclose(near, far, atol=1e-4)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="even whole number"):
        StreamingTransformer(d_model=12, heads=4)  # head_dim 3: rotary needs pairs
    with pytest.raises(ValueError, match="positive"):
        CacheSpec(layers=1, heads=1, head_dim=2, window=0)


@pytest.mark.parametrize(("window", "sinks"), [(4, 0), (6, 2)])
def test_a_block_at_once_equals_its_steps(window, sinks):
    # chunked prefill: blocks shorter and longer than the window, the cache between
    net = StreamingTransformer(d_in=2, window=window, sinks=sinks, layers=2, seed=9)
    x = torch.randn(1, 60, 2, generator=torch.Generator().manual_seed(10))
    cache, outs, t = net.new_cache(1), [], 0
    for size in (1, 3, 9, 2, 15, 1, 29):
        outs.append(net.extend(x[0, t : t + size], cache))
        t += size
    assert torch.allclose(torch.cat(outs), net(x)[0], atol=1e-5)
    assert int(cache.positions[0]) == 60
