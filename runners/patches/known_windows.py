"""A trigger asks whether it knows a window by a lookup, not by listing them all.

Every triggered grouping step on Beam's local runners runs Beam's
``GeneralTriggerDriver``, which treats every window function as merging: its state
adapter (``MergeableStateAdapter``) keeps the key's live windows in a dict, and each
timer asks ``window in state.known_windows()``, which copies that dict's keys into a
new list first. A key with W windows still open (a sparse stream, or a long allowed
lateness) pays O(W) per timer. Here ``known_windows`` returns the dict's live keys
view: the same windows, in the same order, and ``in`` is a hash lookup. Its two
callers only test membership and copy it into a set.

Written for Beam 2.77.0; serves both local runners (the streaming
BundleBasedDirectRunner's grouping and the FnApiRunner's SDK worker share the driver).
"""

from __future__ import annotations

from typing import Any

from runners.patches._patch import MODES, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = MODES


def _keys_view(original: Any) -> Any:
    def known_windows(self: Any) -> Any:
        return self.window_ids.keys()

    return known_windows


def _replacements() -> list[Replacement]:
    from apache_beam.transforms.trigger import MergeableStateAdapter

    return [Replacement(MergeableStateAdapter, "known_windows", _keys_view)]


PATCH = Patch("known_windows", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
