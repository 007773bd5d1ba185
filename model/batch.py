"""Columnar micro-batches: the unit of data in the hot path.

A micro-batch is a :class:`pyarrow.RecordBatch` with these columns:

``key`` (string, or dictionary-encoded string)
    The entity the event belongs to (tenant, sensor, user...). A source that knows
    its keys can hand them over dictionary-encoded (``dictionary<int32, string>``):
    every grouping by key downstream then reads the codes instead of hashing strings
    (:func:`key_codes`). Sinks write plain strings either way.
``event_time`` (``timestamp[us, tz=UTC]``)
    When the event happened. Never a naive timestamp.
``features`` (``fixed_size_list<float32>[d]``)
    The feature vector, one fixed-size list per row, so the whole column is one
    contiguous ``float32`` buffer that numpy and torch can view without a copy.
``label`` (``int64``, optional)
    Class index for labelled events.
``event_id`` (``int64``, optional)
    Unique per event within a stream; used for exactly-once checks and joins.

Other columns are allowed and carried along untouched.

Examples
--------
>>> import numpy as np
>>> b = make_batch(["a", "b"], np.array([0, 1_000_000]), np.ones((2, 3), np.float32),
...                labels=[0, 1], event_ids=[10, 11])
>>> validate_batch(b)
>>> features_numpy(b).shape
(2, 3)
>>> int(min_event_time_us(b))
0
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

# the column names, re-exported: every caller reads them as mb.KEY, mb.LABEL, ...
from model.vocabulary import (
    CARRIED,
    EVENT_ID,
    EVENT_TIME,
    FEATURES,
    KEY,
    LABEL,
    LABEL_TIME,
    MODEL_VERSION,
    PREDICTION,
    SCORE,
)

if TYPE_CHECKING:
    import torch


EVENT_TIME_TYPE = pa.timestamp("us", tz="UTC")
US_PER_SECOND = 1_000_000
NO_WATERMARK = -9_223_372_036_854_775_000  # before any watermark: Beam's least time, in us


class BatchSchemaError(ValueError):
    """A RecordBatch does not follow the micro-batch schema."""


def batch_schema(
    num_features: int, *, with_label: bool = False, with_event_id: bool = True
) -> pa.Schema:
    """The schema of a micro-batch with ``num_features`` features (nulls are rejected
    by :func:`validate_batch`, not by the schema)."""
    if num_features <= 0:
        msg = f"num_features must be > 0, got {num_features!r}"
        raise ValueError(msg)
    fields = [
        pa.field(KEY, pa.string()),
        pa.field(EVENT_TIME, EVENT_TIME_TYPE),
        pa.field(FEATURES, pa.list_(pa.float32(), num_features)),
    ]
    if with_label:
        fields.append(pa.field(LABEL, pa.int64()))
    if with_event_id:
        fields.append(pa.field(EVENT_ID, pa.int64()))
    return pa.schema(fields)


def constant_keys(key: str, n: int) -> pa.Array:
    """A string column of ``n`` copies of ``key``, built from buffers (not from a
    Python list, which costs per row)."""
    data = key.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(data)
    return pa.Array.from_buffers(
        pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data * n)]
    )


def make_batch(
    keys: Sequence[str] | pa.Array | np.ndarray,
    event_times_us: Sequence[int] | np.ndarray,
    features: np.ndarray,
    *,
    labels: Sequence[int] | np.ndarray | None = None,
    event_ids: Sequence[int] | np.ndarray | None = None,
    extra: dict[str, pa.Array | np.ndarray] | None = None,
) -> pa.RecordBatch:
    """Build a micro-batch from numpy/Python columns.

    ``event_times_us`` are microseconds since the Unix epoch (UTC). ``features`` is a
    2-D array (rows, features); it is converted to ``float32`` once and then shared
    with the Arrow buffer.
    """
    feats = np.ascontiguousarray(features, dtype=np.float32)
    if feats.ndim != 2:
        msg = f"features must be 2-D (rows, features), got shape {feats.shape!r}"
        raise ValueError(msg)
    n, d = feats.shape
    times = np.asarray(event_times_us, dtype=np.int64)
    if times.shape != (n,):
        msg = f"event_times_us must have {n} entries, got shape {times.shape!r}"
        raise ValueError(msg)
    key_arr = keys if isinstance(keys, pa.Array) else pa.array(keys, type=pa.string())
    if len(key_arr) != n:
        msg = f"keys must have {n} entries, got {len(key_arr)}"
        raise ValueError(msg)
    arrays: list[pa.Array] = [
        key_arr,
        pa.Array.from_buffers(EVENT_TIME_TYPE, n, [None, pa.py_buffer(times)]),
        pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), d),
    ]
    names = [KEY, EVENT_TIME, FEATURES]
    for name, values in ((LABEL, labels), (EVENT_ID, event_ids)):
        if values is None:
            continue
        col = np.asarray(values, dtype=np.int64)
        if col.shape != (n,):
            msg = f"{name} must have {n} entries, got shape {col.shape!r}"
            raise ValueError(msg)
        arrays.append(pa.array(col))
        names.append(name)
    for name, values in (extra or {}).items():
        arrays.append(values if isinstance(values, pa.Array) else pa.array(values))
        names.append(name)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def validate_batch(batch: pa.RecordBatch) -> None:
    """Raise :class:`BatchSchemaError` naming the first problem with ``batch``."""
    if not isinstance(batch, pa.RecordBatch):
        msg = f"expected a pyarrow.RecordBatch, got {type(batch).__name__}"
        raise BatchSchemaError(msg)
    schema = batch.schema
    for name in (KEY, EVENT_TIME, FEATURES):
        if schema.get_field_index(name) < 0:
            msg = f"micro-batch is missing column {name!r}; has {schema.names!r}"
            raise BatchSchemaError(msg)
    checks: list[tuple[str, Any, str]] = [
        (KEY, _is_key_type, "string or dictionary<int, string>"),
        (EVENT_TIME, lambda t: t == EVENT_TIME_TYPE, "timestamp[us, tz=UTC]"),
        (
            FEATURES,
            lambda t: pa.types.is_fixed_size_list(t) and t.value_type == pa.float32(),
            "fixed_size_list<float32>",
        ),
        (LABEL, pa.types.is_int64, "int64"),
        (EVENT_ID, pa.types.is_int64, "int64"),
    ]
    for name, ok, expected in checks:
        idx = schema.get_field_index(name)
        if idx < 0:
            continue
        col_type = schema.field(idx).type
        if not ok(col_type):
            msg = f"column {name!r} must be {expected}, got {col_type}"
            raise BatchSchemaError(msg)
        if batch.column(idx).null_count:
            msg = f"column {name!r} has {batch.column(idx).null_count} null(s)"
            raise BatchSchemaError(msg)
    key = batch.column(KEY)
    if pa.types.is_dictionary(key.type) and key.dictionary.null_count:
        msg = "column 'key' has null(s) in its dictionary"
        raise BatchSchemaError(msg)
    if batch.column(FEATURES).flatten().null_count:
        msg = "column 'features' has null feature values"
        raise BatchSchemaError(msg)


def _is_key_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))


def num_features(batch: pa.RecordBatch) -> int:
    """Width of the feature vector."""
    return int(batch.schema.field(FEATURES).type.list_size)


def window_start_us(times_us: Any, size_us: int, offset_us: int = 0) -> Any:
    """The start of the fixed window (``size_us`` long, starting at ``offset_us``
    modulo the size) holding each time: an int for an int, an array for an array.

    >>> window_start_us(25, 10), window_start_us(np.array([-1, 3, 14]), 10, 4).tolist()
    (20, [-6, -6, 14])
    """
    return offset_us + (times_us - offset_us) // size_us * size_us


def event_times_us(batch: pa.RecordBatch) -> np.ndarray:
    """Event times as int64 microseconds since the epoch (a view, no copy)."""
    return batch.column(EVENT_TIME).to_numpy(zero_copy_only=True).view(np.int64)


def min_event_time_us(batch: pa.RecordBatch) -> int:
    """The smallest event time in the batch: the batch's Beam timestamp."""
    return int(event_times_us(batch).min())


def features_numpy(batch: pa.RecordBatch) -> np.ndarray:
    """Features as a read-only ``(rows, features)`` float32 view of the Arrow buffer."""
    column = batch.column(FEATURES)
    flat = column.flatten().to_numpy(zero_copy_only=True)
    return flat.reshape(len(column), column.type.list_size)


def features_tensor(batch: pa.RecordBatch) -> torch.Tensor:
    """Features as a CPU ``torch.Tensor`` sharing memory with the Arrow buffer.

    The tensor must not be modified in place (Arrow buffers are immutable).
    """
    import torch

    with warnings.catch_warnings():
        # The array is read-only; we promise not to write through the tensor.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(features_numpy(batch))


def labels_numpy(batch: pa.RecordBatch) -> np.ndarray | None:
    """Labels as an int64 view, or ``None`` when the batch has no label column."""
    if batch.schema.get_field_index(LABEL) < 0:
        return None
    return batch.column(LABEL).to_numpy(zero_copy_only=True)


def key_codes(batch: pa.RecordBatch) -> tuple[np.ndarray, list[str]]:
    """``(codes, keys)``: each row's index into ``keys``, the distinct keys (in order of
    first appearance; for a dictionary-encoded column, in the dictionary's order), in
    one vectorized pass; group by key with ``np.bincount`` etc."""
    column = batch.column(KEY)
    if pa.types.is_dictionary(column.type):
        found = _dictionary_codes(column)
        if found is not None:
            return found
        column = column.cast(pa.string())
    single = _single_key(column)
    if single is not None:
        return np.zeros(len(column), dtype=np.int32), [single]
    encoded = column.dictionary_encode()
    return encoded.indices.to_numpy(zero_copy_only=False), encoded.dictionary.to_pylist()


def _dictionary_codes(column: pa.DictionaryArray) -> tuple[np.ndarray, list[str]] | None:
    """The codes a dictionary-encoded column already has (reading them is an order of
    magnitude cheaper than hashing the strings), renumbered to the keys present; None for a
    dictionary that holds a value twice (Arrow allows it), which must be re-encoded."""
    keys = column.dictionary.to_pylist()
    if len(set(keys)) != len(keys):
        return None
    codes = column.indices.to_numpy(zero_copy_only=False)
    present = np.bincount(codes, minlength=len(keys)) > 0
    if present.all():
        return codes, keys
    renumber = np.cumsum(present) - 1
    return renumber[codes], [key for key, p in zip(keys, present, strict=True) if p]


def plain_keys(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with a plain string ``key`` column (dictionary-encoded keys decoded)."""
    index = batch.schema.get_field_index(KEY)
    if index < 0 or not pa.types.is_dictionary(batch.schema.field(index).type):
        return batch
    return batch.set_column(index, KEY, batch.column(index).cast(pa.string()))


def _single_key(column: pa.Array) -> str | None:
    """The key if every row of a string column holds the same one (a batch of one
    key, common after a split by key): found by comparing the raw bytes, about a
    tenth of the cost of hashing every row; None otherwise."""
    n = len(column)
    if n == 0 or column.type != pa.string() or column.null_count:
        return None
    _, offsets_buf, data_buf = column.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int32)[column.offset : column.offset + n + 1]
    width = int(offsets[1] - offsets[0])
    if int(offsets[-1] - offsets[0]) != width * n:
        return None
    data = data_buf[int(offsets[0]) : int(offsets[-1])].to_pybytes()
    first = data[:width]
    # the bytes first (one memcmp: most mixed batches fail it), then the row bounds
    if data != first * n or not (np.diff(offsets) == width).all():
        return None
    return first.decode()


def group_bounds(codes: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, bounds)``: the rows of group ``g`` are ``order[bounds[g]:bounds[g+1]]``,
    in their original order (``codes`` as from :func:`key_codes`)."""
    order = np.argsort(codes, kind="stable")
    return order, np.searchsorted(codes[order], np.arange(groups + 1))


def order_key(batch: pa.RecordBatch) -> tuple[int, int]:
    """Where a batch falls in event-time order: its first event time, then its
    smallest event id (0 without ids): what orders batches into a sequence."""
    first_id = 0
    if EVENT_ID in batch.schema.names and batch.num_rows:
        first_id = int(batch.column(EVENT_ID).to_numpy(zero_copy_only=False).min())
    return min_event_time_us(batch), first_id


def take(batch: pa.RecordBatch, indices: np.ndarray) -> pa.RecordBatch:
    """Rows of ``batch`` at ``indices`` (a copy)."""
    return batch.take(pa.array(indices, type=pa.int64()))


def sort_by_time(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with its rows in event-time order (stable)."""
    order = np.argsort(event_times_us(batch), kind="stable")
    if np.all(order[1:] > order[:-1]):
        return batch
    return take(batch, order)


def in_event_order(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch's rows by event time, then event id (when it has ids): the order a
    sequential step works through them in, the same on every runner."""
    times = event_times_us(batch)
    if EVENT_ID in batch.schema.names:
        order = np.lexsort((batch.column(EVENT_ID).to_numpy(zero_copy_only=False), times))
    else:
        order = np.argsort(times, kind="stable")
    if np.all(order[1:] > order[:-1]):
        return batch
    return take(batch, order)


def concat(batches: Iterable[pa.RecordBatch]) -> pa.RecordBatch:
    """Concatenate batches with the same schema into one (keys dictionary-encoded in
    some and plain in others come out plain)."""
    items = list(batches)
    if len(items) == 1:
        return items[0]
    if any(b.schema != items[0].schema for b in items[1:]):
        items = [plain_keys(b) for b in items]
    return pa.Table.from_batches(items).combine_chunks().to_batches()[0]


def chunks(batch: pa.RecordBatch, max_rows: int) -> list[pa.RecordBatch]:
    """Zero-copy slices of at most ``max_rows`` rows."""
    if max_rows <= 0:
        msg = f"max_rows must be > 0, got {max_rows!r}"
        raise ValueError(msg)
    return [batch.slice(i, max_rows) for i in range(0, batch.num_rows, max_rows)]


def scored_batch(
    batch: pa.RecordBatch, prediction: np.ndarray, score: np.ndarray, version: int | np.ndarray
) -> pa.RecordBatch:
    """The prediction rows for ``batch``: the carried input columns (``key``,
    ``event_time``, ``event_id``, ``label`` where present) plus ``prediction``,
    ``score`` and ``model_version`` (one version for every row, or one per row)."""
    names = [c for c in CARRIED if c in batch.schema.names]
    arrays = [batch.column(c) for c in names]
    versions = np.broadcast_to(np.asarray(version, dtype=np.int64), (batch.num_rows,))
    arrays += [
        pa.array(prediction, type=pa.int64()),
        pa.array(score, type=pa.float32()),
        pa.array(versions, type=pa.int64()),
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[*names, PREDICTION, SCORE, MODEL_VERSION])


def encode_batch(batch: pa.RecordBatch) -> bytes:
    """One batch as an Arrow IPC stream (schema metadata included)."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue()


def decode_batch(data: bytes | pa.Buffer) -> pa.RecordBatch:
    """The batch :func:`encode_batch` wrote."""
    with pa.ipc.open_stream(data) as reader:
        return reader.read_next_batch()


def split_by_key(batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """``(key, rows of that key)`` for each key in the batch, rows kept in order."""
    codes, keys = key_codes(batch)
    if len(keys) == 1:
        yield keys[0], batch
        return
    order, bounds = group_bounds(codes, len(keys))
    ordered = take(batch, order)
    for i, key in enumerate(keys):
        yield key, ordered.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))


# Schema metadata: the source watermark in force when a batch was emitted, which the
# lateness rule (transforms.window.lateness) judges pieces by.
WATERMARK_KEY = b"watermark_us"


def with_watermark(batch: pa.RecordBatch, watermark_us: int) -> pa.RecordBatch:
    """The batch, tagged with the source watermark in force when it is emitted."""
    meta = dict(batch.schema.metadata or {})
    meta[WATERMARK_KEY] = str(int(watermark_us)).encode()
    return batch.replace_schema_metadata(meta)


def watermark_of(batch: pa.RecordBatch) -> int | None:
    meta = batch.schema.metadata or {}
    raw = meta.get(WATERMARK_KEY)
    return None if raw is None else int(raw)


# Schema metadata: a batch of labels only (``key``, ``event_time``, ``event_id``,
# ``label``) for events that arrived earlier without them (delayed labels).
LABELS_ONLY_KEY = b"sml_labels_only"


def label_batch(batch: pa.RecordBatch, delay_us: int | None = None) -> pa.RecordBatch:
    """The labels of ``batch``'s rows, as a batch of labels only; with ``delay_us``,
    each known that long after its event (the ``label_time`` column)."""
    names = [c for c in (KEY, EVENT_TIME, EVENT_ID, LABEL, LABEL_TIME) if c in batch.schema.names]
    labels = batch.select(names)
    if delay_us is not None:
        if LABEL_TIME in names:
            labels = labels.drop_columns([LABEL_TIME])
        known = times_array(event_times_us(labels) + delay_us)
        labels = labels.append_column(pa.field(LABEL_TIME, EVENT_TIME_TYPE), known)
    meta = dict(labels.schema.metadata or {})
    meta[LABELS_ONLY_KEY] = b"1"
    return labels.replace_schema_metadata(meta)


def is_label_batch(batch: pa.RecordBatch) -> bool:
    return LABELS_ONLY_KEY in (batch.schema.metadata or {})


def without_labels(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` without its label column (what a scorer may see before the label)."""
    index = batch.schema.get_field_index(LABEL)
    return batch if index < 0 else batch.remove_column(index)


def label_times_us(batch: pa.RecordBatch) -> np.ndarray:
    """When each row's label became known (``label_time``), as int64 microseconds."""
    return batch.column(LABEL_TIME).to_numpy(zero_copy_only=False).view(np.int64)


def at_label_time(batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` (labelled events that carry ``label_time``) with each event time moved
    to when its label became known, and no ``label_time``: what a learner may learn
    at a time, and no earlier."""
    index = batch.schema.get_field_index(EVENT_TIME)
    moved = batch.set_column(index, EVENT_TIME, times_array(label_times_us(batch)))
    return moved.drop_columns([LABEL_TIME])


def times_array(times_us: np.ndarray) -> pa.Array:
    times = np.ascontiguousarray(times_us, dtype=np.int64)
    return pa.Array.from_buffers(EVENT_TIME_TYPE, len(times), [None, pa.py_buffer(times)])
