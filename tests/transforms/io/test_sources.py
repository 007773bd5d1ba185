"""Streaming replays: the same elements whichever way they travel."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from model import batch as mb
from model.streams.synthetic import SyntheticConfig, generate
from runners.direct import executes_test_stream_in_python
from tests.conftest import make_pipeline
from transforms.io import SyntheticSource, WatermarkPacer


def _seen(batch, timestamp=beam.DoFn.TimestampParam):
    ids = tuple(batch.column(mb.EVENT_ID).to_pylist())
    return ids, int(timestamp.micros), mb.watermark_of(batch)


def _expected(cfg, interval_us):
    pacer, out = WatermarkPacer(interval_us), []
    for chunk in generate(cfg):
        ids = tuple(chunk.batch.column(mb.EVENT_ID).to_pylist())
        out.append((ids, mb.min_event_time_us(chunk.batch), pacer.watermark))
        pacer.due(chunk.watermark_us)
    return out


@pytest.mark.parametrize("as_bytes", [False, True], ids=["batches", "bytes"])
def test_replayed_batches_are_the_chunks_with_their_timestamps_and_watermarks(as_bytes):
    """The streaming DirectRunner gets the batches themselves; Flink's way (tagged
    bytes, then a decoding step) must give the same elements."""
    cfg = SyntheticConfig(num_events=3000, chunk_events=256, events_per_second=200.0)
    p = make_pipeline(streaming=True)
    in_python = executes_test_stream_in_python(p.runner) and not as_bytes
    assert in_python != as_bytes  # the streaming DirectRunner runs TestStream in Python
    out = p | SyntheticSource(
        cfg, streaming=True, python_test_stream=in_python, watermark_interval_s=2.0
    )
    assert out.events == cfg.num_events
    assert_that(out.batches | beam.Map(_seen), equal_to(_expected(cfg, 2_000_000)))
    assert_that(out.dead_letter, equal_to([]), label="NoDeadLetters")
    p.run().wait_until_finish()
