"""A ParDo's empty output bundles are not handed to its consumers.

The streaming BundleBasedDirectRunner gives each ParDo one output bundle per output
tag for every input bundle, and commits all of them, empty or not: every consumer of
every output, a dead-letter tag that almost never carries anything included, is then
scheduled once per upstream bundle (an executor task, an evaluator, a DoFn runner
started and finished) to process nothing. An empty bundle adds no element that a
watermark must wait for and no value to a side input, so leaving it out changes no
result: each ParDo's ``finish_bundle`` returns only the bundles that hold elements.

Written for Beam 2.77.0; serves the streaming BundleBasedDirectRunner (the FnApiRunner
fuses consumers into one bundle and schedules no such steps).
"""

from __future__ import annotations

from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})


def _skipping_empty(original: Any) -> Any:
    def finish_bundle(self: Any) -> Any:
        result = original(self)
        bundles = result.uncommitted_output_bundles
        kept = [b for b in bundles if b.has_elements()]
        if len(kept) != len(bundles):
            result.uncommitted_output_bundles = kept
        return result

    return finish_bundle


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct.transform_evaluator import _ParDoEvaluator

    return [Replacement(_ParDoEvaluator, "finish_bundle", _skipping_empty)]


PATCH = Patch("empty_bundles", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
