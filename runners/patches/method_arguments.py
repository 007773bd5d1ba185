"""Cache the arguments of DoFn methods: Beam inspects them again for every bundle.

Every bundle builds a ``DoFnSignature``, which inspects the signature of the DoFn's
methods through ``core.get_function_arguments`` (``inspect``, slow), and the
BundleBasedDirectRunner does it for every bundle of every step. A method defined on
the DoFn's class has the same arguments for every instance, so those are cached per
function, and every caller gets lists of its own. Anything else is inspected every
time as before: methods set on the instance, DoFns that answer through
``_inspect_<name>`` as ``beam.Map`` does (the wrapped callable decides), and wrappers
that hand the attribute to another DoFn (``with_exception_handling``, ...).

Written for Beam 2.77.0; serves both local runners (the streaming
BundleBasedDirectRunner per bundle, the bounded FnApiRunner while translating).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from runners.patches._patch import BOUNDED, STREAMING, Patch, Replacement

BEAM_VERSION = "2.77.0"
SERVES = frozenset({STREAMING, BOUNDED})


def _cached(original: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    cache: dict[Any, tuple[list[str], list[Any]]] = {}  # by the method's function

    def get_function_arguments(obj: Any, func: str) -> Any:
        if hasattr(obj, f"_inspect_{func}"):
            return original(obj, func)
        bound = getattr(obj, func, None)
        function = getattr(bound, "__func__", None)
        # Only a plain method bound to obj itself: wrappers that hand the attribute
        # to another DoFn (with_exception_handling, ...) are inspected every time.
        if getattr(bound, "__self__", None) is not obj or not isinstance(
            function, types.FunctionType
        ):
            return original(obj, func)
        if function not in cache:
            cache[function] = original(obj, func)
        args, defaults = cache[function]
        return list(args), list(defaults)

    return get_function_arguments


def _replacements() -> list[Replacement]:
    from apache_beam.transforms import core

    return [Replacement(core, "get_function_arguments", _cached)]


PATCH = Patch(
    "method_arguments", beam_version=BEAM_VERSION, serves=SERVES, replacements=_replacements
)
install = PATCH.install
uninstall = PATCH.uninstall
