"""Plain PyTorch and Python, no Beam: the micro-batch schema, networks, model versions,
the model handler, the incremental learner, the online step, streams and parsers.

>>> import model
>>> {"make_batch", "ModelArtifact", "IncrementalLearner", "DeadLetter"} <= set(model.__all__)
True
"""

from model.artifact import ModelArtifact
from model.batch import BatchSchemaError, make_batch, scored_batch, validate_batch
from model.batching import AdaptiveBatchSize
from model.device import HostStaging, resolve_device
from model.drift import PageHinkley
from model.handler import TorchModelHandler
from model.keyed import ModelCache
from model.learn import IncrementalLearner, LearnerConfig, RunningScaler, dumps_state, loads_state
from model.mlp import MLPClassifier, fit
from model.online import OnlineConfig, OnlineStep, PrequentialStep, TrainingStep, WindowGrid
from model.process_cache import LRU, PROCESS_CACHE, ProcessCache
from model.streams import CsvFormat, Drift, SyntheticConfig
from model.transformer import TinyTransformerClassifier
from model.vocabulary import NAMESPACE, DeadLetter, Metric, Pane, Stage

__all__ = [
    "LRU",
    "NAMESPACE",
    "PROCESS_CACHE",
    "AdaptiveBatchSize",
    "BatchSchemaError",
    "CsvFormat",
    "DeadLetter",
    "Drift",
    "HostStaging",
    "IncrementalLearner",
    "LearnerConfig",
    "MLPClassifier",
    "Metric",
    "ModelArtifact",
    "ModelCache",
    "OnlineConfig",
    "OnlineStep",
    "Pane",
    "PageHinkley",
    "PrequentialStep",
    "ProcessCache",
    "RunningScaler",
    "Stage",
    "SyntheticConfig",
    "TinyTransformerClassifier",
    "TorchModelHandler",
    "TrainingStep",
    "WindowGrid",
    "dumps_state",
    "fit",
    "loads_state",
    "make_batch",
    "resolve_device",
    "scored_batch",
    "validate_batch",
]
