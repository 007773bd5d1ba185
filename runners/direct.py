"""DirectRunner set-up: which local runner executes a pipeline, and its options.

Beam 2.77's ``DirectRunner`` first tries Prism, a binary it downloads at run time, and
falls back to other runners when that fails; results then depend on the network. We
pick explicitly instead:

- streaming pipelines (TestStream replays, watermarks, triggers, processing time) run
  on the ``BundleBasedDirectRunner``, Beam's reference streaming implementation;
- bounded pipelines run on the ``FnApiRunner``, the fast portable in-process runner.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineRunner


def direct_runner(*, streaming: bool) -> PipelineRunner:
    """The local runner for a streaming or a bounded pipeline."""
    return BundleBasedDirectRunner() if streaming else FnApiRunner()


def direct_options(*, streaming: bool, extra: list[str] | None = None) -> PipelineOptions:
    """Pipeline options for a local run."""
    args = [*(extra or [])]
    if streaming:
        args.append("--streaming")
    return PipelineOptions(args, save_main_session=False)
