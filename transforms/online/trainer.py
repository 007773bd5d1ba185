"""Decoupled online learning: a trainer that publishes a model version per window.

:class:`OnlineTrainer` learns from labelled, fixed-windowed micro-batches in one
stateful step (one model for the stream) and emits each new version as a
:class:`~model.artifact.ModelArtifact`, stamped at the start of the window after the
one it learned through and repeated for ``carry_windows`` windows (framed windows:
that much event time, at least 2 frames; see :func:`carried_frames`), in fixed windows
like its input. A scorer that reads these as a side input windowed like its main
input (:class:`transforms.inference.StreamingInference` with ``updates=``) scores
window k+1 with the model trained through window k: never an event older than what
the model learned from. Window size and allowed lateness come from the input's
windowing.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import apache_beam as beam
from torch import nn

from model.artifact import ModelArtifact
from model.online.book import split_at_windows
from model.online.config import OnlineConfig, WindowGrid
from model.online.step import TrainingStep
from transforms.io import coders as _coders  # noqa: F401  (registers the artifact coder)
from transforms.online.step import OnlineStepDoFn, fixed_windows, keyed_by_model, window_grid


def carried_frames(grid: WindowGrid, carry_windows: int) -> int:
    """How many Beam windows a version is stamped for: ``carry_windows`` windows'
    worth, and framed windows at least 2 frames (so one frame without data, whose
    end sets no timer, is still covered), not ``carry_windows`` frames each."""
    if not grid.framed:
        return carry_windows
    return max(2, math.ceil(carry_windows * grid.window_us / grid.size_us))


class OnlineTrainer(beam.PTransform):
    """Labelled windowed batches in, model versions (``ModelArtifact``) out.

    >>> from model.mlp import MLPClassifier
    >>> trainer = OnlineTrainer(functools.partial(MLPClassifier, 2, seed=0))

    ``factory()`` builds a fresh module (seeded, so every call gives the same initial
    weights); version 0 is that untrained module, the scorer's starting point.
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        config: OnlineConfig | None = None,
        *,
        carry_windows: int = 16,
        grid: WindowGrid | None = None,
    ) -> None:
        """``grid``: the windows to learn in, where the input's windowing does not
        say (labelled batches joined in the global window, e.g. by
        :class:`transforms.online.labels.JoinLabels`); default: the input's."""
        super().__init__()
        self._factory = factory
        self._config = config or OnlineConfig()
        self._carry = carry_windows
        self._grid = grid

    def expand(self, labelled: beam.PCollection) -> beam.PCollection:
        grid = self._grid or window_grid(labelled)
        make = functools.partial(
            TrainingStep, self._factory, self._config, grid, carried_frames(grid, self._carry)
        )
        step = OnlineStepDoFn(make, per_key=False, updates_tag=None, drain=labelled.is_bounded)
        if self._grid is not None:  # given a grid, not read off Beam windows: batches
            # (labels joined long after their events) may span its windows
            labelled = labelled | "AtWindows" >> beam.FlatMap(split_at_windows, grid)
        return (
            keyed_by_model(labelled, per_key=False)
            | "Train" >> beam.ParDo(step).with_output_types(ModelArtifact)
            | "UpdateWindows" >> beam.WindowInto(fixed_windows(grid))
        )
