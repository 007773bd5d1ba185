"""Runner set-up: which runner executes a pipeline, with which options.

- :mod:`runners.direct`: the local runners (streaming on the BundleBasedDirectRunner,
  bounded on the FnApiRunner) and their options;
- :mod:`runners.patches`: the documented, opt-in patches that make those faster;
- :mod:`runners.flink`: Flink's job server, a local cluster, a worker pool, options;
- :mod:`runners.prism`: Beam's Prism runner, built from source with Go.

The names from ``runners.direct`` (which imports Beam's runners, a slow import) and
``runners.prism`` are loaded on first use: ``python -m runners.flink`` and anything
else that needs none of them starts quickly, and ``python -m runners.prism`` does not
find its module imported already.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from runners import patches
from runners.flink import FlinkSettings, FlinkUnavailable, flink_args, job_args

if TYPE_CHECKING:
    from runners.direct import direct_options, direct_runner, executes_test_stream_in_python
    from runners.prism import PrismUnavailable, prism_args

__all__ = [
    "FlinkSettings",
    "FlinkUnavailable",
    "PrismUnavailable",
    "direct_options",
    "direct_runner",
    "executes_test_stream_in_python",
    "flink_args",
    "job_args",
    "patches",
    "prism_args",
]

# name -> the module it comes from, imported on first use
_LAZY = {
    "direct_options": "runners.direct",
    "direct_runner": "runners.direct",
    "executes_test_stream_in_python": "runners.direct",
    "PrismUnavailable": "runners.prism",
    "prism_args": "runners.prism",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module {__name__!r} has no attribute {name!r}"
    raise AttributeError(msg)
