"""Collect a PCollection's elements in the test process (local runners only).

``pcoll | beam.ParDo(Collect(name))`` appends every element to a list kept in this
module; the DoFn is pickled by reference to this module, so the runner's copy writes
to the same dict. Unlike ``assert_that`` there is no GroupByKey, so elements that a
runner emits after the final watermark (timer output on the legacy DirectRunner,
which does not hold the watermark for user timers) are still seen.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

_RESULTS: dict[str, list[Any]] = {}
_LOCK = threading.Lock()


class Collect(beam.DoFn):
    def __init__(self, name: str) -> None:
        self.name = name
        with _LOCK:
            _RESULTS[name] = []

    def process(self, element: Any) -> Iterator[None]:
        with _LOCK:
            _RESULTS[self.name].append(element)
        return iter(())


def take(name: str) -> list[Any]:
    with _LOCK:
        return _RESULTS.pop(name, [])


def rows_of(batch: Any) -> list[dict[str, Any]]:
    """The rows of an Arrow batch as dicts (window statistics come as batches)."""
    return batch.to_pylist()
