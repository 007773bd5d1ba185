"""Beam coders for what our PCollections carry: micro-batches, model versions, dead letters.

Without them Beam falls back to pickling, which (besides being slow for batches, and
measuring a batch's size by pickling it) pickles functions *by reference*: a model
version whose factory was defined in the user's ``__main__`` then fails to pickle in
the workers, where ``__main__`` is not the script. Registered on import for
``pyarrow.RecordBatch``, :class:`model.artifact.ModelArtifact` and
:class:`model.vocabulary.DeadLetter`; PCollections typed with them (see
``with_output_types``) use them.

>>> import numpy as np
>>> from model import batch as mb
>>> b = mb.make_batch(["a"], [0], np.zeros((1, 2)))
>>> RecordBatchCoder().decode(RecordBatchCoder().encode(b)).equals(b)
True
>>> from model.vocabulary import DeadLetter
>>> d = DeadLetter("bad row", "parse", payload={"line": 3})
>>> DeadLetterCoder().decode(DeadLetterCoder().encode(d)) == d
True
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.internal import pickler

from model.artifact import ModelArtifact
from model.batch import decode_batch, encode_batch
from model.vocabulary import DeadLetter


class _TypedCoder(beam.coders.Coder):
    """A coder for one Python type: equal to any other instance of its class."""

    value_type: type = object

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self) -> type:
        return self.value_type

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))


class RecordBatchCoder(_TypedCoder):
    """Arrow IPC stream encoding of one RecordBatch (schema metadata included)."""

    value_type = pa.RecordBatch

    def encode(self, value: pa.RecordBatch) -> bytes:
        return encode_batch(value)

    def decode(self, encoded: bytes) -> pa.RecordBatch:
        return decode_batch(encoded)

    def estimate_size(self, value: Any) -> int:
        return int(value.nbytes)


class ModelArtifactCoder(_TypedCoder):
    """A model version pickled the way Beam pickles DoFns (functions of ``__main__``
    and closures by value), so its factory travels wherever the step that made it
    could."""

    value_type = ModelArtifact

    def encode(self, value: ModelArtifact) -> bytes:
        return pickler.dumps(value)

    def decode(self, encoded: bytes) -> ModelArtifact:
        artifact = pickler.loads(encoded)
        if not isinstance(artifact, ModelArtifact):
            msg = f"expected a ModelArtifact, decoded a {type(artifact).__name__}"
            raise TypeError(msg)
        return artifact

    def estimate_size(self, value: Any) -> int:
        return len(value.data or b"") + 256


class DeadLetterCoder(_TypedCoder):
    """A dead letter as the JSON record the sinks write."""

    value_type = DeadLetter

    def encode(self, value: DeadLetter) -> bytes:
        return json.dumps(value.to_record(), sort_keys=True, default=str).encode()

    def decode(self, encoded: bytes) -> DeadLetter:
        return DeadLetter.from_record(json.loads(encoded))


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)
beam.coders.registry.register_coder(ModelArtifact, ModelArtifactCoder)
beam.coders.registry.register_coder(DeadLetter, DeadLetterCoder)
