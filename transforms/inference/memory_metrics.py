"""Beam metrics of memory control (:mod:`model.memory_control`), for the steps that
score or learn under a budget: counters of measured steps, steps over the budget
and out-of-memory errors, and a distribution of each report's peak bytes (its
maximum is the run's peak), each named for its role (``memory_steps.scoring``,
``memory_steps.learning``, ...)."""

from __future__ import annotations

import apache_beam as beam

from model.memory_control import MemoryFigures
from model.vocabulary import NAMESPACE, Metric

ROLES = ("scoring", "learning")


def metric_name(base: str, role: str) -> str:
    return f"{base}.{role}"


class MemoryMetrics:
    """Made in a DoFn's ``setup``; :meth:`report` what a control's figures drained."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            msg = f"role must be one of {ROLES}, got {role!r}"
            raise ValueError(msg)
        m = beam.metrics.Metrics
        self.steps = m.counter(NAMESPACE, metric_name(Metric.MEMORY_STEPS, role))
        self.over_budget = m.counter(NAMESPACE, metric_name(Metric.MEMORY_OVER_BUDGET, role))
        self.ooms = m.counter(NAMESPACE, metric_name(Metric.MEMORY_OOMS, role))
        self.peak = m.distribution(NAMESPACE, metric_name(Metric.MEMORY_PEAK_BYTES, role))

    def report(self, figures: MemoryFigures | None) -> None:
        if figures is None or not (figures.steps or figures.ooms):
            return
        self.steps.inc(figures.steps)
        if figures.over_budget:
            self.over_budget.inc(figures.over_budget)
        if figures.ooms:
            self.ooms.inc(figures.ooms)
        self.peak.update(figures.peak_bytes)
