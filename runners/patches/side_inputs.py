"""A windowed side input is looked up by window, not scanned.

The streaming BundleBasedDirectRunner keeps every element a side input ever received
in one list, and for each window a consumer asks about it filters that whole list
(``sideinputs._FilteringIterable``): with one model version per event-time window, a
stream of W windows scans O(W) elements per window, O(W^2) in all, and a sparse
stream (one event per window) spends most of its time there. Here each list gets one
index by window, extended with the elements added since it was last read, and a
window's values are the index's entry: the same values in the same order as the
filter gives (an element in several windows is in each of their entries), read at
the same moment (lookup time).

Written for Beam 2.77.0; serves the streaming BundleBasedDirectRunner (the FnApiRunner
serves side inputs through its state API, by window already).
"""

from __future__ import annotations

import threading
from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})


class _WindowIndex:
    """The values of one side input's element list, by window, kept up to date."""

    def __init__(self, elements: list[Any]) -> None:
        self.elements = elements  # the runner's list (appended to, never rewritten)
        self._done = 0
        self._by_window: dict[Any, list[Any]] = {}
        self._lock = threading.Lock()

    def values(self, target_window: Any) -> list[Any]:
        with self._lock:
            new = self.elements[self._done :]  # one slice: what it indexes, it counts
            for wv in new:
                for w in wv.windows:
                    self._by_window.setdefault(w, []).append(wv.value)
            self._done += len(new)
            return list(self._by_window.get(target_window, ()))


def _indexed_map_class() -> type:
    from apache_beam.transforms import sideinputs

    class IndexedSideInputMap(sideinputs.SideInputMap):
        def __init__(self, view_class: Any, view_options: Any, index: _WindowIndex) -> None:
            super().__init__(view_class, view_options, index.elements)
            self._index = index

        def __getitem__(self, window: Any) -> Any:
            if window not in self._cache:
                target = self._window_mapping_fn(window)
                self._cache[window] = self._view_class._from_runtime_iterable(
                    self._index.values(target), self._view_options
                )
            return self._cache[window]

    return IndexedSideInputMap


def _by_window(original: Any) -> Any:
    indexed_map = _indexed_map_class()

    def _pvalue_to_value(self: Any, side_input: Any, values: Any) -> Any:
        if not isinstance(values, list):
            return original(self, side_input, values)
        indexes: dict[int, _WindowIndex] = self.__dict__.setdefault("_sml_indexes", {})
        index = indexes.get(id(values))
        if index is None or index.elements is not values:
            index = indexes[id(values)] = _WindowIndex(values)
        return indexed_map(type(side_input), side_input._view_options(), index)

    return _pvalue_to_value


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct.evaluation_context import _SideInputsContainer

    return [Replacement(_SideInputsContainer, "_pvalue_to_value", _by_window)]


PATCH = Patch("side_inputs", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
