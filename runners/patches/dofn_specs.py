"""Cache the state and timer specs of DoFn classes: Beam finds them again per bundle.

``userstate.get_dofn_specs`` wraps and inspects the signature of *every* method of a
DoFn (several dozen with the base class) to find its state and timer parameters. The
BundleBasedDirectRunner calls it for every bundle, and both local runners several
times per stateful step while translating. The specs come from the defaults of the
class's methods, so they are cached per DoFn class.

``transform_evaluator`` imported ``get_dofn_specs`` and ``is_stateful_dofn`` by name;
its ``get_dofn_specs`` becomes the cached one too, and its ``is_stateful_dofn`` is
(re)bound to userstate's, which looks ``get_dofn_specs`` up in userstate and so sees
the cached one.

Written for Beam 2.77.0; serves both local runners (the streaming
BundleBasedDirectRunner per bundle, the bounded FnApiRunner while translating).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runners.patches._patch import BOUNDED, STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING, BOUNDED})


def _cached(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    cache: dict[type, Any] = {}

    def get_dofn_specs(dofn: Any) -> Any:
        cls = type(dofn)
        if cls not in cache:
            cache[cls] = original(dofn)
        return cache[cls]

    return get_dofn_specs


def _replacements() -> list[Replacement]:
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.transforms import userstate

    # In order: the evaluator's names are bound to what userstate has by then.
    return [
        Replacement(userstate, "get_dofn_specs", _cached),
        Replacement(transform_evaluator, "get_dofn_specs", lambda _: userstate.get_dofn_specs),
        Replacement(transform_evaluator, "is_stateful_dofn", lambda _: userstate.is_stateful_dofn),
    ]


PATCH = Patch("dofn_specs", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
