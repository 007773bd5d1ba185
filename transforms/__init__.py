"""Beam PTransforms for streaming ML on micro-batches.

>>> import transforms
>>> "EventTimeWindow" in transforms.__all__ and "OnlineClassifier" in transforms.__all__
True
"""

from transforms.inference import KeyedInference, StreamingInference, TorchModelHandlerNumpy
from transforms.io import (
    CsvSource,
    ModelStore,
    SourceOut,
    SyntheticSource,
    WriteBatches,
    WriteRecords,
    read_jsonl_dir,
    read_parquet_dir,
    replay,
)
from transforms.online import (
    JoinLabels,
    OnlineClassifier,
    OnlineConfig,
    OnlineOut,
    OnlineTrainer,
    PrequentialLearner,
    PrequentialOut,
)
from transforms.window import EventTimeWindow, TriggerSpec, WindowOut, WindowSpec, WindowStats

__all__ = [
    "CsvSource",
    "EventTimeWindow",
    "JoinLabels",
    "KeyedInference",
    "ModelStore",
    "OnlineClassifier",
    "OnlineConfig",
    "OnlineOut",
    "OnlineTrainer",
    "PrequentialLearner",
    "PrequentialOut",
    "SourceOut",
    "StreamingInference",
    "SyntheticSource",
    "TorchModelHandlerNumpy",
    "TriggerSpec",
    "WindowOut",
    "WindowSpec",
    "WindowStats",
    "WriteBatches",
    "WriteRecords",
    "read_jsonl_dir",
    "read_parquet_dir",
    "replay",
]
