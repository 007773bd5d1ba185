"""Build each ``PipelineOptions`` view once: pipeline construction re-parses flags.

``PipelineOptions.view_as(cls)`` builds an argparse parser for ``cls`` and parses the
flags again on every call, and building and running one pipeline calls it for every
``apply`` and type check. A view keeps nothing of its own: it reads and writes the
options' shared ``_all_options`` dict, filled once per option name, and parses flags
that never change. So the first view of each class is kept for its options object
(weakly: options that go away take their views with them) and handed out again;
values set through one view are seen through every other, as before.

Written for Beam 2.77.0; serves both local runners (pipeline construction and the
runners' own option lookups are the same for the streaming BundleBasedDirectRunner
and the bounded FnApiRunner).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from runners.patches._patch import BOUNDED, STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING, BOUNDED})


def _memoized(original: Callable[[Any, type], Any]) -> Callable[[Any, type], Any]:
    views: weakref.WeakKeyDictionary[Any, dict[type, Any]] = weakref.WeakKeyDictionary()

    def view_as(self: Any, cls: type) -> Any:
        of_self = views.setdefault(self, {})
        if cls not in of_self:
            of_self[cls] = original(self, cls)
        return of_self[cls]

    return view_as


def _replacements() -> list[Replacement]:
    from apache_beam.options import pipeline_options

    return [Replacement(pipeline_options.PipelineOptions, "view_as", _memoized)]


PATCH = Patch("option_views", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
