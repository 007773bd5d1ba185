"""Weigh plain state values with ``sys.getsizeof``: Beam's weighing walks every module.

Every state write on the FnApiRunner puts the value in the SDK worker's state cache,
which weighs it with ``objsize.get_deep_size``; that walks the globals of every loaded
module (thousands, with torch and TensorFlow imported) on each call, whatever the
value. Values that are plain scalars or bytes, or lists or tuples of them (a bag of
``BytesCoder`` elements, as our stateful steps keep), are weighed with
``sys.getsizeof`` instead, which is what objsize adds up for them anyway; so are
objects whose class says its own size (defines ``__sizeof__``, as
:class:`model.artifact.ModelArtifact` does: a side input of model versions is cached
and weighed at every window), and lists of them; anything else goes to objsize as
before.

Written for Beam 2.77.0; serves the bounded FnApiRunner only: the streaming
BundleBasedDirectRunner keeps user state in structures of its own, not in the SDK
worker's state cache.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from runners.patches._patch import BOUNDED, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({BOUNDED})

_PLAIN = (bytes, str, int, float, bool, type(None))


def _sized(obj: Any) -> bool:
    """Weighed by ``sys.getsizeof``: plain values, and instances of a (non-builtin)
    class that defines its own ``__sizeof__``."""
    cls = type(obj)
    return isinstance(obj, _PLAIN) or (cls.__module__ != "builtins" and "__sizeof__" in vars(cls))


def _cheap_for_plain(original: Callable[..., int]) -> Callable[..., int]:
    def get_deep_size(*objs: Any) -> int:
        total = 0
        for obj in objs:
            if _sized(obj):
                total += sys.getsizeof(obj)
            elif type(obj) in (list, tuple) and all(map(_sized, obj)):
                total += sys.getsizeof(obj) + sum(sys.getsizeof(v) for v in obj)
            else:
                return original(*objs)
        return total

    return get_deep_size


def _replacements() -> list[Replacement]:
    from apache_beam.runners.worker import statecache

    return [Replacement(statecache, "get_deep_size", _cheap_for_plain)]


PATCH = Patch("state_weight", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements)
install = PATCH.install
uninstall = PATCH.uninstall
