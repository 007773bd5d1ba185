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
import struct
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.internal import pickler

from model.artifact import Kind, ModelArtifact
from model.batch import decode_batch, encode_batch
from model.process_cache import LRU
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
    """A model version: its factory pickled the way Beam pickles DoFns (functions of
    ``__main__`` and closures by value), so it travels wherever the step that made it
    could; its weights as they are. A stream publishes many versions of one factory,
    so each distinct factory is pickled (and unpickled) once per process, and a
    version repeated for several windows is encoded once."""

    value_type = ModelArtifact

    def encode(self, value: ModelArtifact) -> bytes:
        cached = _ENCODED.get(id(value))
        if cached is not None and cached[0] is value:  # the id is this object's
            return cached[1]
        factory = b"" if value.factory is None else _pickled_factory(value.factory)
        data = value.data or b""
        until = value.trained_until_us
        flags = (value.data is not None) | (until is not None) << 1
        head = _HEAD.pack(_KINDS.index(value.kind), value.version, until or 0, flags, len(factory))
        encoded = b"".join((head, factory, data))
        _ENCODED.put(id(value), (value, encoded))
        return encoded

    def decode(self, encoded: bytes) -> ModelArtifact:
        cached = _DECODED.get(encoded)
        if cached is not None:
            return cached
        kind, version, until, flags, n = _HEAD.unpack_from(encoded)
        at = _HEAD.size
        factory = _unpickled_factory(encoded[at : at + n]) if n else None
        data = encoded[at + n :] if flags & 1 else None
        artifact = ModelArtifact(_KINDS[kind], version, factory, data, until if flags & 2 else None)
        _DECODED.put(encoded, artifact)
        return artifact

    def estimate_size(self, value: Any) -> int:
        return len(value.data or b"") + 256


_KINDS: tuple[Kind, ...] = ("state_dict", "torchscript", "factory")
# kind, version, trained until, flags (1: has data, 2: has trained until), factory length
_HEAD = struct.Struct("<BqqBI")
_CACHED = 64  # distinct factories / recent versions kept per process
# (the object is kept with its encoding, so that its id is not reused meanwhile)
_ENCODED: LRU[int, tuple[ModelArtifact, bytes]] = LRU(_CACHED)
_DECODED: LRU[bytes, ModelArtifact] = LRU(_CACHED)
_FACTORIES: LRU[Any, tuple[Any, bytes]] = LRU(_CACHED)
_UNPICKLED: LRU[bytes, Any] = LRU(_CACHED)


def _pickled_factory(factory: Any) -> bytes:
    """Beam's pickle of ``factory``, once per factory (by value where it hashes,
    else by identity, the object kept alive so that its id is not reused)."""
    try:
        key: Any = ("v", factory)
        hash(key)
    except TypeError:
        key = ("id", id(factory))
    cached = _FACTORIES.get(key)
    if cached is not None and (key[0] == "v" or cached[0] is factory):
        return cached[1]
    pickled = pickler.dumps(factory)
    _FACTORIES.put(key, (factory, pickled))
    return pickled


def _unpickled_factory(pickled: bytes) -> Any:
    factory = _UNPICKLED.get(pickled)
    if factory is None:
        factory = pickler.loads(pickled)
        _UNPICKLED.put(pickled, factory)
    return factory


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
