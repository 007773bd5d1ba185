"""What every Beam patch shares: the version guard, and replacing attributes so that
they can be put back exactly as they were.

A patch replaces a few attributes of Beam's modules or classes. Each was written
against one Beam release and relies on that release's internals (which function
calls which, what is cached where), so it refuses to install on any other: a newer
Beam may have fixed the problem, or moved the code so that the patch silently does
nothing, or does something else. Installing records the owner's own attribute (not
one it inherits), and uninstalling puts that very object back, or deletes the
attribute when the owner had none of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["streaming", "bounded"]
STREAMING: Mode = "streaming"  # the legacy BundleBasedDirectRunner (TestStream, watermarks)
BOUNDED: Mode = "bounded"  # the FnApiRunner
MODES: frozenset[Mode] = frozenset({STREAMING, BOUNDED})

# Installing and uninstalling read and write process-wide attributes: one at a time.
LOCK = threading.RLock()


class BeamVersionMismatch(RuntimeError):
    """A patch was written for another Beam release than the one installed."""

    def __init__(self, patch: str, written_for: str, installed: str) -> None:
        self.patch = patch
        self.written_for = written_for
        self.installed = installed
        super().__init__(
            f"the Beam patch {patch!r} was written for apache_beam {written_for}, but "
            f"apache_beam {installed} is installed: it was not applied (check that it is "
            "still needed and still fits before raising its BEAM_VERSION)"
        )

    def __reduce__(self) -> tuple[Any, tuple[str, str, str]]:
        return type(self), (self.patch, self.written_for, self.installed)


def installed_beam_version() -> str:
    import apache_beam

    return str(apache_beam.__version__)


@dataclass(frozen=True)
class Replacement:
    """``owner.name`` (a module's or a class's attribute) becomes ``wrap(original)``."""

    owner: Any
    name: str
    wrap: Callable[[Any], Any]


# (owner, name, whether the owner had the attribute itself, that attribute)
_Saved = tuple[Any, str, bool, Any]


class Patch:
    """One documented change to Beam internals, installed and uninstalled as a unit.

    ``replacements`` is called at each install (it imports the Beam modules, so that
    nothing of Beam is loaded or touched before then) and its replacements are made in
    order: a later one may read what an earlier one installed. ``reset`` drops what
    the patch kept while installed.
    """

    def __init__(
        self,
        name: str,
        *,
        beam_version: str,
        serves: frozenset[Mode],
        replacements: Callable[[], Sequence[Replacement]],
        reset: Callable[[], None] | None = None,
    ) -> None:
        if not name:
            raise ValueError("a patch needs a name")
        if not serves or not serves <= MODES:
            msg = f"a patch serves some of {sorted(MODES)}, got {sorted(serves)!r}"
            raise ValueError(msg)
        self.name = name
        self.beam_version = beam_version
        self.serves = serves
        self._replacements = replacements
        self._reset = reset
        self._saved: list[_Saved] | None = None  # None: not installed

    def __repr__(self) -> str:
        state = "installed" if self.installed else "not installed"
        return f"<Patch {self.name} for Beam {self.beam_version}, {state}>"

    @property
    def installed(self) -> bool:
        return self._saved is not None

    def serves_mode(self, streaming: bool | None) -> bool:
        """Whether the local runner for ``streaming`` needs this patch (None: either)."""
        return streaming is None or (STREAMING if streaming else BOUNDED) in self.serves

    def check_version(self) -> None:
        """Raise :class:`BeamVersionMismatch` unless Beam is the release this patch
        was written for."""
        installed = installed_beam_version()
        if installed != self.beam_version:
            raise BeamVersionMismatch(self.name, self.beam_version, installed)

    def install(self) -> bool:
        """Make the replacements; True if this call did, False if already installed.
        Checks Beam's version first; a replacement that fails undoes the others."""
        with LOCK:
            if self._saved is not None:
                return False
            self.check_version()
            saved: list[_Saved] = []
            try:
                for r in self._replacements():
                    own = vars(r.owner)
                    record = (r.owner, r.name, r.name in own, own.get(r.name))
                    # wrapped before anything changes: a wrap that fails leaves
                    # nothing of this replacement to undo (None: no attribute yet)
                    replacement = r.wrap(getattr(r.owner, r.name, None))
                    setattr(r.owner, r.name, replacement)
                    saved.append(record)
            except BaseException:
                _restore(saved)
                raise
            self._saved = saved
            return True

    def uninstall(self) -> bool:
        """Put the original attributes back; True if this call did, False if the
        patch was not installed."""
        with LOCK:
            if self._saved is None:
                return False
            _restore(self._saved)
            self._saved = None
            if self._reset is not None:
                self._reset()
            return True


def _restore(saved: list[_Saved]) -> None:
    for owner, name, had_own, original in reversed(saved):
        if had_own:
            setattr(owner, name, original)
        else:
            delattr(owner, name)
