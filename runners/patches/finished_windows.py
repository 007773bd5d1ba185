"""A grouping step forgets a finished window once Beam would drop its late data.

The streaming BundleBasedDirectRunner keeps each key's grouping state in memory, by
window, and copies all of it for every bundle the key takes part in. When a window's
trigger finishes, Beam clears its elements but leaves the window's bookkeeping in
that state (a tombstone, pane indexes, trigger state) for the rest of the run: the
state, and each copy of it, grows by a window per window (a stream of 650 windows
copied 650 windows' entries at the end, 3,000 times). Once the input watermark is
past the window's end plus its allowed lateness, Beam's trigger driver ignores every
element for that window before it looks at the state (``GeneralTriggerDriver.
process_elements``: "ignore expired windows"), so that window's entries can change
no result once no timer is left to fire for it and it buffers nothing (or is
finished): after each key's work, such a window is removed. Not for merging windows
(sessions), where a new window may merge into a finished one: Beam then drops the
new element, and without the finished window it would open a pane.

Written for Beam 2.77.0; serves the streaming BundleBasedDirectRunner (the FnApiRunner
holds grouping state per bundle and starts afresh with each).
"""

from __future__ import annotations

from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})


def _forgetting_finished(original: Any) -> Any:
    from apache_beam.transforms.trigger import MergeableStateAdapter

    def process_element(self: Any, element: Any) -> Any:
        result = original(self, element)
        lateness = getattr(self.driver, "allowed_lateness", None)
        window_fn = getattr(self.driver, "window_fn", None)
        if lateness is None or window_fn is None or window_fn.is_merging():
            return result  # sessions: a new window may merge into a finished one
        key = element.value.encoded_key
        state = self._step_context.get_keyed_state(key)
        ids = state.get_global_state(MergeableStateAdapter.WINDOW_IDS)
        if not ids:
            return result
        watermarks = self._evaluation_context._watermark_manager.get_watermarks(
            self._applied_ptransform
        )
        expired = watermarks.input_watermark - lateness
        tombstone, elements = self.driver.TOMBSTONE.tag, self.driver.ELEMENTS.tag
        gone = [
            window
            for window, window_ids in ids.items()
            if window.end < expired
            and not any(i in state.timers for i in window_ids)
            and all(
                tombstone in state.state.get(i, ()) or not state.state.get(i, {}).get(elements)
                for i in window_ids
            )
        ]
        if gone:  # a copy: the dict may be shared with the state this bundle copied
            ids = dict(ids)
            for window in gone:
                for i in ids.pop(window):
                    state.state.pop(i, None)
            state.set_global_state(MergeableStateAdapter.WINDOW_IDS, ids)
            self.keyed_holds[key] = state.get_earliest_hold()
        return result

    return process_element


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct.transform_evaluator import (
        _StreamingGroupAlsoByWindowEvaluator,
    )

    return [
        Replacement(_StreamingGroupAlsoByWindowEvaluator, "process_element", _forgetting_finished)
    ]


PATCH = Patch(
    "finished_windows", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements
)
install = PATCH.install
uninstall = PATCH.uninstall
