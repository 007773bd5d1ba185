"""Predict-then-learn on a stream, in either mode, with one output shape.

``decoupled`` (scales out): an :class:`~transforms.online.trainer.OnlineTrainer`
publishes a version per window and a
:class:`~transforms.inference.streaming.StreamingInference` scorer reads them as a
side input: window k+1 is scored by the model trained through window k.
``coupled`` (exact): a :class:`~transforms.online.prequential.PrequentialLearner`
predicts each batch, then learns it. Neither lets a model score an event older than
what it learned from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import apache_beam as beam
from torch import nn

from model.artifact import ModelArtifact
from model.online.config import OnlineConfig
from transforms.inference.streaming import StreamingInference
from transforms.online.prequential import PrequentialLearner
from transforms.online.step import window_grid
from transforms.online.trainer import OnlineTrainer
from transforms.window.stats import WindowStats

Mode = Literal["decoupled", "coupled"]


@dataclass(frozen=True)
class OnlineOut:
    """``predictions``: scored batches (windowed); ``updates``: published model versions;
    ``stats``: prequential statistics, Arrow batches of a row per key, window and pane."""

    predictions: beam.PCollection
    updates: beam.PCollection
    stats: beam.PCollection


class OnlineClassifier(beam.PTransform):
    """Score windowed micro-batches while learning from them; see the module docstring.

    ``labelled``: train on these batches instead of the input (decoupled mode), e.g.
    the output of :class:`transforms.online.labels.JoinLabels` when labels come late.
    ``per_key``: one model per event key (coupled mode). ``carry_windows``: how many
    windows each version is offered to the scorer for (decoupled mode).
    """

    def __init__(
        self,
        factory: Callable[[], nn.Module],
        config: OnlineConfig | None = None,
        *,
        mode: Mode = "decoupled",
        per_key: bool = False,
        carry_windows: int = 16,
        device: str = "cpu",
        labelled: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("decoupled", "coupled"):
            msg = f"mode must be 'decoupled' or 'coupled', got {mode!r}"
            raise ValueError(msg)
        if per_key and mode == "decoupled":
            msg = "per-key models need mode='coupled' (the decoupled scorer holds one model)"
            raise ValueError(msg)
        if labelled is not None and mode == "coupled":
            msg = "separately arriving labels need mode='decoupled' (coupled learns on arrival)"
            raise ValueError(msg)
        self._factory = factory
        self._config = config or OnlineConfig()
        self._mode = mode
        self._per_key = per_key
        self._carry = carry_windows
        self._device = device
        self._labelled = labelled

    def expand(self, batches: beam.PCollection) -> OnlineOut:
        if self._mode == "coupled":
            out = batches | "PredictThenLearn" >> PrequentialLearner(
                self._factory, self._config, per_key=self._per_key
            )
            return OnlineOut(out.predictions, out.updates, out.stats)
        training = batches if self._labelled is None else self._labelled
        # the scored input's windows: labels joined later may come in the global window
        trainer = OnlineTrainer(
            self._factory, self._config, carry_windows=self._carry, grid=window_grid(batches)
        )
        updates = training | "Train" >> trainer
        initial = ModelArtifact.from_module(self._factory(), 0, factory=self._factory)
        scored = batches | "Score" >> StreamingInference(
            initial, device=self._device, updates=updates, memory=self._config.learner.memory
        )
        return OnlineOut(scored, updates, scored | "WindowStats" >> WindowStats())
