"""End-to-end pipelines and the command line that runs them.

``python pipelines/main.py`` (or ``sml``) is :func:`pipelines.main.main`; :func:`run`
builds and runs one :class:`PipelineConfig` on a runner and returns its :class:`RunSummary`; the
``build`` functions of :mod:`pipelines.anomaly`, :mod:`pipelines.classify`,
:mod:`pipelines.federated`, :mod:`pipelines.recommend` and :mod:`pipelines.score` add
a pipeline to a ``beam.Pipeline`` of your own (:data:`BUILDERS`).

>>> import pipelines
>>> sorted(pipelines.BUILDERS)
['anomaly', 'classify', 'federated', 'recommend', 'score']
"""

from pipelines.cli import BadInputError, UsageError, config_from_args, parse_args
from pipelines.config import PIPELINES, PipelineConfig
from pipelines.main import BUILDERS, run
from pipelines.score import PipelineOutputs
from pipelines.summary import RunSummary, WindowAccuracy

__all__ = [
    "BUILDERS",
    "PIPELINES",
    "BadInputError",
    "PipelineConfig",
    "PipelineOutputs",
    "RunSummary",
    "UsageError",
    "WindowAccuracy",
    "config_from_args",
    "parse_args",
    "run",
]
