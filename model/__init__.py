"""Plain PyTorch and Python, no Beam: the micro-batch schema, networks, model versions,
the model handler, the incremental learner, the online step, streams and parsers.

The names below load on first use (``model.MLPClassifier`` imports torch then), so
that tools needing one light module (``model.vocabulary``, ``model.cache_dir``) do
not load torch.

>>> import model
>>> {"make_batch", "ModelArtifact", "IncrementalLearner", "DeadLetter"} <= set(model.__all__)
True
>>> model.DeadLetter.__module__
'model.vocabulary'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.artifact import (
        ModelArtifact,
    )
    from model.batch import (
        BatchSchemaError,
        make_batch,
        scored_batch,
        validate_batch,
    )
    from model.batching import (
        AdaptiveBatchSize,
    )
    from model.device import (
        HostStaging,
        resolve_device,
    )
    from model.drift import (
        PageHinkley,
    )
    from model.handler import (
        TorchModelHandler,
    )
    from model.keyed import (
        ModelCache,
    )
    from model.learn import (
        IncrementalLearner,
        LearnerConfig,
        RunningScaler,
        dumps_state,
        loads_state,
    )
    from model.mlp import (
        MLPClassifier,
        fit,
    )
    from model.online import (
        OnlineConfig,
        OnlineStep,
        PrequentialStep,
        TrainingStep,
        WindowGrid,
    )
    from model.process_cache import (
        LRU,
        PROCESS_CACHE,
        ProcessCache,
    )
    from model.streams import (
        CsvFormat,
        Drift,
        SyntheticConfig,
    )
    from model.transformer import (
        TinyTransformerClassifier,
    )
    from model.vocabulary import (
        NAMESPACE,
        DeadLetter,
        Metric,
        Pane,
        Stage,
    )

# name -> the module it comes from, imported on first use
_LAZY = {
    "ModelArtifact": "model.artifact",
    "BatchSchemaError": "model.batch",
    "make_batch": "model.batch",
    "scored_batch": "model.batch",
    "validate_batch": "model.batch",
    "AdaptiveBatchSize": "model.batching",
    "HostStaging": "model.device",
    "resolve_device": "model.device",
    "PageHinkley": "model.drift",
    "TorchModelHandler": "model.handler",
    "ModelCache": "model.keyed",
    "IncrementalLearner": "model.learn",
    "LearnerConfig": "model.learn",
    "RunningScaler": "model.learn",
    "dumps_state": "model.learn",
    "loads_state": "model.learn",
    "MLPClassifier": "model.mlp",
    "fit": "model.mlp",
    "OnlineConfig": "model.online",
    "OnlineStep": "model.online",
    "PrequentialStep": "model.online",
    "TrainingStep": "model.online",
    "WindowGrid": "model.online",
    "LRU": "model.process_cache",
    "PROCESS_CACHE": "model.process_cache",
    "ProcessCache": "model.process_cache",
    "CsvFormat": "model.streams",
    "Drift": "model.streams",
    "SyntheticConfig": "model.streams",
    "TinyTransformerClassifier": "model.transformer",
    "NAMESPACE": "model.vocabulary",
    "DeadLetter": "model.vocabulary",
    "Metric": "model.vocabulary",
    "Pane": "model.vocabulary",
    "Stage": "model.vocabulary",
}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    msg = f"module 'model' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
