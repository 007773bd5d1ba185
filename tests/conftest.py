"""Shared fixtures: local pipelines on the runners our DirectRunner set-up picks."""

from __future__ import annotations

import os

import apache_beam as beam
import pytest

from runners.direct import direct_options, direct_runner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_pipeline(*, streaming: bool) -> beam.Pipeline:
    return beam.Pipeline(
        runner=direct_runner(streaming=streaming), options=direct_options(streaming=streaming)
    )


@pytest.fixture
def batch_pipeline() -> beam.Pipeline:
    return make_pipeline(streaming=False)


@pytest.fixture
def stream_pipeline() -> beam.Pipeline:
    return make_pipeline(streaming=True)
