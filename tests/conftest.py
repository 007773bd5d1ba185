"""Shared fixtures: local pipelines on the runners our DirectRunner set-up picks, and
the correctness suite run with Beam's patches on and off.

Our patches of Beam's local runners (:mod:`runners.patches`) must not change any
result, so every test under ``tests/transforms/`` and ``tests/pipelines/`` runs
twice, ``[patched]`` and ``[unpatched]``; ``--beam-patches=on`` or ``off`` runs only
one of them. Other tests (models without Beam, the Flink and Prism runners) run
patched; the README examples (``tests/test_library_use.py``) run in processes of their
own, never patched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
import pytest

from runners import patches
from runners.direct import direct_options, direct_runner
from runners.processes import free_port

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TESTS = Path(__file__).resolve().parent
_BOTH_WAYS = ("transforms", "pipelines")  # directories under tests/
_STATES = {"both": ["patched", "unpatched"], "on": ["patched"], "off": ["unpatched"]}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--beam-patches",
        choices=sorted(_STATES),
        default="both",
        help="run the correctness tests (tests/transforms, tests/pipelines) with "
        "Beam's patches on, off, or both (default); other tests always run patched",
    )


def _both_ways(path: Path) -> bool:
    try:
        rel = path.resolve().relative_to(TESTS)
    except ValueError:
        return False
    return len(rel.parts) > 1 and rel.parts[0] in _BOTH_WAYS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "beam_patches" in metafunc.fixturenames and _both_ways(metafunc.definition.path):
        states = _STATES[metafunc.config.getoption("--beam-patches")]
        metafunc.parametrize("beam_patches", states, indirect=True)


@pytest.fixture(autouse=True)
def beam_patches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``patched`` (every patch applied) or ``unpatched`` (every patch reverted) for
    this test. Unpatched, ``patches.apply`` installs nothing until the test ends, so
    that the command line (``pipelines.main.main`` applies them) runs unpatched too."""
    state = getattr(request, "param", "patched")
    if state == "patched":
        patches.apply()
    else:
        patches.revert()
        monkeypatch.setattr(patches, "apply", lambda streaming=None: [])
    yield state


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


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A Kafka broker of this test session on 127.0.0.1 (stopped by PID at the end);
    the tests that need one skip where Kafka cannot be assembled here."""
    from runners.kafka import KafkaUnavailable, LocalBroker, install

    try:
        install()
    except KafkaUnavailable as err:
        pytest.skip(f"no Kafka broker here: {err}")
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"), free_port(), free_port())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
