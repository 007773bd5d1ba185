"""Pickle each DoFn once per run on the BundleBasedDirectRunner, not once per bundle.

Every bundle of every ParDo starts with ``pickler.roundtrip(dofn)``: pickle the DoFn,
unpickle a fresh copy (Beam's own TODO there: keep the pickled form). A lambda is
pickled by value, and the runner makes a bundle per step per watermark, so replays
with many watermarks spend much of their time pickling the same objects.

The pickled form is kept for the run and unpickled for each bundle: every bundle
still gets a fresh copy, and a DoFn that cannot be pickled still fails at its first
bundle. Kept forms are of the copy a ParDo makes when it is applied (a DoFn changed
later is another object, pickled anew), found by identity (checked through a weak
reference) and dropped when a run starts, so they do not pile up. The kept form
skips the bz2 and base64 of ``pickler.dumps``, as Beam's roundtrip does. Objects that
cannot be weakly referenced, and pickling libraries without ``_dumps``/``_loads``,
take Beam's roundtrip as before.

Written for Beam 2.77.0; serves the streaming (legacy) BundleBasedDirectRunner only:
the bounded FnApiRunner does not round-trip DoFns per bundle.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from runners.patches._patch import STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING})

# id(DoFn) -> (a weak reference to it, its pickled form), for the current run
_PICKLED_DOFNS: dict[int, tuple[Any, bytes]] = {}


class _PickleOnce:
    """The ``pickler`` that transform_evaluator sees: Beam's, with a roundtrip that
    pickles each object once."""

    def __init__(self, pickler: Any) -> None:
        self._pickler = pickler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pickler, name)

    def roundtrip(self, obj: Any) -> Any:
        # What Beam's roundtrip does, in two halves: pickle, unpickle (no bz2 and
        # base64 as in pickler.dumps, which cost more than the pickling).
        pickler = self._pickler
        lib = pickler.desired_pickle_lib
        dumps, loads = getattr(lib, "_dumps", None), getattr(lib, "_loads", None)
        kept = _PICKLED_DOFNS.get(id(obj))
        if kept is None or kept[0]() is not obj:
            try:
                ref = weakref.ref(obj)
            except TypeError:
                ref = None
            if ref is None or dumps is None or loads is None:
                return pickler.roundtrip(obj)  # as before
            kept = _PICKLED_DOFNS[id(obj)] = (ref, dumps(obj))
        assert loads is not None
        return loads(kept[1])


def _forgetting_each_run(original: Callable[..., Any]) -> Callable[..., Any]:
    def run_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        _PICKLED_DOFNS.clear()
        return original(self, *args, **kwargs)

    return run_pipeline


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

    return [
        Replacement(transform_evaluator, "pickler", _PickleOnce),
        Replacement(BundleBasedDirectRunner, "run_pipeline", _forgetting_each_run),
    ]


PATCH = Patch(
    "pickle_once",
    beam_version=BEAM_VERSION,
    serves=SERVES,
    replacements=_replacements,
    reset=_PICKLED_DOFNS.clear,
)
install = PATCH.install
uninstall = PATCH.uninstall
