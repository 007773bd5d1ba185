"""Our PyTorch handler behind Beam's ``ModelHandler`` interface, for ``RunInference``.

Examples are feature vectors (1-D numpy arrays); each result is a
``PredictionResult(example, {"prediction", "score"}, model_id=<version>)``. Model
updates through ``RunInference(model_metadata_pcoll=...)`` work with model-store
paths (:mod:`transforms.io.model_store`): Beam calls :meth:`update_model_path` and
reloads.

>>> import numpy as np
>>> from model.mlp import MLPClassifier
>>> h = TorchModelHandlerNumpy(ModelArtifact.from_module(MLPClassifier(3, seed=0), 4), device="cpu")
>>> [r.model_id for r in h.run_inference([np.zeros(3, np.float32)], h.load_model())]
['4']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from model.artifact import ModelArtifact
from model.handler import TorchModelHandler
from model.vocabulary import PREDICTION, SCORE
from transforms.io.model_store import read_path


class TorchModelHandlerNumpy(ModelHandler[np.ndarray, PredictionResult, TorchModelHandler]):
    """A Beam ``ModelHandler`` scoring numpy feature vectors with :class:`TorchModelHandler`."""

    def __init__(
        self,
        artifact: ModelArtifact | None = None,
        *,
        model_path: str | None = None,
        device: str = "auto",
        min_batch_size: int = 1,
        max_batch_size: int = 1024,
    ) -> None:
        if (artifact is None) == (model_path is None):
            raise ValueError("pass exactly one of artifact or model_path")
        super().__init__()
        self._artifact = artifact
        self._path = model_path
        self._device = device
        self._batch_kwargs = {"min_batch_size": min_batch_size, "max_batch_size": max_batch_size}

    def load_model(self) -> TorchModelHandler:
        artifact = read_path(self._path) if self._path else self._artifact
        assert artifact is not None
        return TorchModelHandler(artifact, self._device)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: TorchModelHandler,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        x = torch.from_numpy(np.stack([np.asarray(e, dtype=np.float32) for e in batch]))
        pred, score = model.predict(x)
        version = str(model.version)
        return [
            PredictionResult(e, {PREDICTION: int(p), SCORE: float(s)}, model_id=version)
            for e, p, s in zip(batch, pred, score, strict=True)
        ]

    def update_model_path(self, model_path: str | None = None) -> None:
        if model_path:
            self._path = model_path

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return int(sum(np.asarray(e).nbytes for e in batch))

    def get_metrics_namespace(self) -> str:
        return "streaming_ml_runinference"

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._batch_kwargs
