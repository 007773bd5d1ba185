"""Streams without Beam: the synthetic drifting stream, classic concept-drift streams,
and CSV parsing into micro-batches (bad rows become dead letters)."""

from model.streams.csv_parse import CsvFormat, ParsedChunk, check_header, parse_lines
from model.streams.drift_streams import STREAMS, agrawal, as_chunks, hyperplane, sea
from model.streams.synthetic import Drift, StreamChunk, SyntheticConfig, generate

__all__ = [
    "STREAMS",
    "CsvFormat",
    "Drift",
    "ParsedChunk",
    "StreamChunk",
    "SyntheticConfig",
    "agrawal",
    "as_chunks",
    "check_header",
    "generate",
    "hyperplane",
    "parse_lines",
    "sea",
]
