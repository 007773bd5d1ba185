"""DirectRunner set-up: which local runner executes a pipeline, and its options.

Beam 2.77's ``DirectRunner`` first tries Prism, a binary it downloads at run time, and
falls back to other runners when that fails; results then depend on the network. We
pick explicitly instead:

- streaming pipelines (TestStream replays, watermarks, triggers, processing time) run
  on the ``BundleBasedDirectRunner``, Beam's reference streaming implementation;
- bounded pipelines run on the ``FnApiRunner``, the fast portable in-process runner.

Choosing a runner changes nothing in Beam: the documented patches that make these
runners faster are opt-in, see :mod:`runners.patches`.
"""

from __future__ import annotations

from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner


def direct_runner(*, streaming: bool) -> PipelineRunner:
    """The local runner for a streaming or a bounded pipeline."""
    return BundleBasedDirectRunner() if streaming else FnApiRunner()


def executes_test_stream_in_python(runner: PipelineRunner | str | None) -> bool:
    """Whether ``runner`` runs a ``TestStream`` in this Python process, so that a
    replay's elements may keep a coder only Python knows.

    True for a BundleBasedDirectRunner (what :func:`direct_runner` picks for
    streaming). Flink, Prism and the portable runners run TestStream outside Python
    (in Java or Go) and need standard coders. A runner given by name (or None, Beam's
    default) answers False: Beam resolves ``DirectRunner`` to Prism when it can, and
    False is always safe, since standard coders work on every runner.
    """
    return isinstance(runner, BundleBasedDirectRunner)


def run(pipeline: Any) -> Any:
    """Run a pipeline built on :func:`direct_runner` and return its result.

    For the streaming (legacy) runner Beam first round-trips the pipeline through its
    runner API and pickles every transform on the way (bz2 at level 9), to prove it
    portable. A replay source holds its whole stream in its ``TestStream``, so that
    proof costs time per event before the first one flows; the FnApiRunner always
    goes through the runner API anyway. This runs without the proof; the test suite
    still runs every streaming pipeline with it.
    """
    return pipeline.run(test_runner_api=False)


def direct_options(*, streaming: bool, extra: list[str] | None = None) -> PipelineOptions:
    """Pipeline options for a local run."""
    args = [*(extra or [])]
    if streaming:
        args.append("--streaming")
    return PipelineOptions(args, save_main_session=False)
