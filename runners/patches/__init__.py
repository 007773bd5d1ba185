"""Documented patches of Beam's local runners: opt-in, one module each, version-guarded.

Beam 2.77's local runners spend much of a small pipeline's time redoing work whose
answer cannot change (re-parsing option flags, re-inspecting DoFn signatures,
re-pickling DoFns per bundle, weighing state by walking every module, waiting out a
sampler's sleep). Each module here removes one such cost without changing any result:

- :mod:`~runners.patches.option_views`: one ``PipelineOptions`` view per class (both);
- :mod:`~runners.patches.method_arguments`: DoFn method arguments cached (both);
- :mod:`~runners.patches.dofn_specs`: DoFn state/timer specs cached (both);
- :mod:`~runners.patches.pickle_once`: each DoFn pickled once per run (streaming);
- :mod:`~runners.patches.immutable_copies`: timestamps and windows not deep-copied
  with the grouping state (streaming);
- :mod:`~runners.patches.empty_bundles`: a ParDo's empty output bundles not
  scheduled on its consumers (streaming);
- :mod:`~runners.patches.known_windows`: a trigger's known-window test a lookup
  (both);
- :mod:`~runners.patches.finished_windows`: a grouping step's finished windows
  forgotten once past their allowed lateness (streaming);
- :mod:`~runners.patches.side_inputs`: a windowed side input looked up by window,
  not scanned (streaming);
- :mod:`~runners.patches.state_weight`: plain state weighed cheaply (bounded);
- :mod:`~runners.patches.state_sampler`: state sampled every millisecond (bounded);
- :mod:`~runners.patches.bundle_metrics`: every bundle's user metrics reported, not
  only each worker thread's first bundle's (streaming; this one fixes a result).

("streaming": the legacy BundleBasedDirectRunner that :func:`runners.direct.direct_runner`
picks for streaming pipelines; "bounded": the FnApiRunner it picks for the others.)

Nothing is patched on import, and choosing a runner patches nothing: whoever runs
pipelines decides. The command line (``pipelines/main.py``, ``--no-beam-patches`` to
opt out), the benchmarks and the test suite (which also runs its correctness tests
unpatched) call :func:`apply`; library users may, for their own process::

    from runners import patches
    patches.apply(streaming=True)  # or: with patches.applied(): ...

Each patch was written for one Beam release (its ``BEAM_VERSION``) and refuses any
other with :class:`BeamVersionMismatch`; :func:`revert` puts back the very objects
it replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from runners.patches import (
    bundle_metrics,
    dofn_specs,
    empty_bundles,
    finished_windows,
    immutable_copies,
    known_windows,
    method_arguments,
    option_views,
    pickle_once,
    side_inputs,
    state_sampler,
    state_weight,
)
from runners.patches._patch import LOCK, BeamVersionMismatch, Patch

PATCHES: tuple[Patch, ...] = (
    option_views.PATCH,
    method_arguments.PATCH,
    dofn_specs.PATCH,
    pickle_once.PATCH,
    immutable_copies.PATCH,
    empty_bundles.PATCH,
    finished_windows.PATCH,
    side_inputs.PATCH,
    known_windows.PATCH,
    state_weight.PATCH,
    state_sampler.PATCH,
    bundle_metrics.PATCH,
)

__all__ = [
    "PATCHES",
    "BeamVersionMismatch",
    "Patch",
    "active",
    "applied",
    "apply",
    "revert",
]


def _serving(streaming: bool | None) -> list[Patch]:
    return [p for p in PATCHES if p.serves_mode(streaming)]


def apply(streaming: bool | None = None) -> list[str]:
    """Install the patches that the local runner for ``streaming`` needs (None: those
    of both); the names of those patches, every one of them installed now.

    Idempotent. Raises :class:`BeamVersionMismatch`, having installed none of them,
    when the installed Beam is not the release one of them was written for."""
    with LOCK:
        chosen = _serving(streaming)
        for patch in chosen:
            patch.check_version()
        for patch in chosen:
            patch.install()
    return [p.name for p in chosen]


def revert() -> list[str]:
    """Uninstall every installed patch, restoring Beam's original objects; the names
    of the patches uninstalled."""
    with LOCK:
        return [p.name for p in reversed(PATCHES) if p.uninstall()]


def active() -> list[str]:
    """The names of the installed patches."""
    return [p.name for p in PATCHES if p.installed]


@contextmanager
def applied(streaming: bool | None = None) -> Iterator[list[str]]:
    """:func:`apply` for the ``with`` block; afterwards, uninstall the patches that
    it installed (those installed before stay)."""
    with LOCK:
        before = set(active())
        names = apply(streaming)
    try:
        yield names
    finally:
        with LOCK:
            for patch in reversed(PATCHES):
                if patch.name in names and patch.name not in before:
                    patch.uninstall()
