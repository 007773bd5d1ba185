"""Interaction events as micro-batches (:mod:`model.reco.events`), from CSV files or
the synthetic drifting-tastes stream (:mod:`model.streams.interactions`), bounded or
replayed as a stream with watermarks (:class:`transforms.io.chunk_source.ChunkSource`).
Every row is a batch row or a dead letter."""

from __future__ import annotations

import functools
from collections.abc import Iterable

import apache_beam as beam
import pyarrow as pa

from model.reco.events import Chunk, InteractionFormat, chunks, read_csv
from model.streams.interactions import InteractionsConfig, interactions
from transforms.io.chunk_source import ChunkSource
from transforms.io.replay import ReplayItem, SourceOut


def interaction_chunks(
    paths: Iterable[str], fmt: InteractionFormat, synthetic: InteractionsConfig | None
) -> list[Chunk]:
    """The chunks of every input in turn (``synthetic``: the generated stream)."""
    if synthetic is not None:
        table = pa.table(interactions(synthetic))
        plain = InteractionFormat("timestamp", "user", "item", "rating",
                                  fmt.chunk_rows, fmt.lag_s)  # fmt: skip
        return list(chunks(table, plain))
    out: list[Chunk] = []
    for path in paths:
        out += chunks(read_csv(path, fmt), fmt)
    return out


def _items(
    paths: list[str], fmt: InteractionFormat, synthetic: InteractionsConfig | None
) -> list[ReplayItem]:
    return [(c.batch, c.watermark_us, c.dead) for c in interaction_chunks(paths, fmt, synthetic)]


class InteractionsSource(beam.PTransform):
    """Interaction micro-batches and dead letters; see the module docstring."""

    def __init__(
        self,
        paths: Iterable[str] = (),
        fmt: InteractionFormat | None = None,
        *,
        synthetic: InteractionsConfig | None = None,
        streaming: bool = False,
        python_test_stream: bool = False,
        watermark_interval_s: float = 0.0,
    ) -> None:
        super().__init__()
        paths = list(paths)
        if not paths and synthetic is None:
            raise ValueError("InteractionsSource needs input paths or a synthetic config")
        read = functools.partial(_items, paths, fmt or InteractionFormat(), synthetic)
        self._source = ChunkSource(read, streaming=streaming, python_test_stream=python_test_stream,
                                   watermark_interval_s=watermark_interval_s,
                                   label="Interactions")  # fmt: skip

    def expand(self, pbegin: beam.pvalue.PBegin) -> SourceOut:
        return pbegin | "Chunks" >> self._source
