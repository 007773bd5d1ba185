"""Scoring micro-batches with PyTorch models: streaming (hot swap), keyed, RunInference."""

from transforms.inference.beam_handler import TorchModelHandlerNumpy
from transforms.inference.keyed import KeyedInference
from transforms.inference.streaming import ModelUpdate, StreamingInference

__all__ = ["KeyedInference", "ModelUpdate", "StreamingInference", "TorchModelHandlerNumpy"]
