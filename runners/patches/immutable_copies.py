"""Deep copies of Beam's timestamps and windows are the objects themselves.

The streaming BundleBasedDirectRunner deep-copies the keyed state of every grouping
step (the buffered elements, and the trigger and watermark-hold state keyed by
window) for each bundle, so that a failed bundle leaves it untouched. Most of what
that copy rebuilds, one ``__reduce_ex__`` round at a time, are ``Timestamp``,
``Duration``, ``IntervalWindow`` and ``GlobalWindow`` objects: values that no code
changes once made (arithmetic returns new objects; an interval window's bounds are
read-only). A copy of an unchangeable value can be the value, as ``copy`` already
does for ``int`` and ``str``: each of these classes gets a ``__deepcopy__`` that
returns ``self``, so the state's copy shares them.

Written for Beam 2.77.0; serves the streaming BundleBasedDirectRunner (the FnApiRunner
keeps grouping state in its own encoded form and never deep-copies it).
"""

from __future__ import annotations

from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})


def _itself(self: Any, memo: Any) -> Any:
    return self


def _shared(original: Any) -> Any:
    return _itself


def _replacements() -> list[Replacement]:
    from apache_beam.transforms.window import GlobalWindow, IntervalWindow
    from apache_beam.utils.timestamp import Duration, Timestamp

    return [
        Replacement(cls, "__deepcopy__", _shared)
        for cls in (Timestamp, Duration, IntervalWindow, GlobalWindow)
    ]


PATCH = Patch(
    "immutable_copies", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements
)
install = PATCH.install
uninstall = PATCH.uninstall
