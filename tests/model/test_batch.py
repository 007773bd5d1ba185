import numpy as np
import pyarrow as pa
import pytest
import torch

from model import batch as mb


def _batch(n: int = 5, d: int = 3) -> pa.RecordBatch:
    rng = np.random.default_rng(0)
    return mb.make_batch(
        [f"k{i % 2}" for i in range(n)],
        np.arange(n, dtype=np.int64) * 1_000_000,
        rng.standard_normal((n, d)),
        labels=np.arange(n) % 2,
        event_ids=np.arange(n),
    )


def test_schema_and_validation_pass():
    b = _batch()
    mb.validate_batch(b)
    assert b.schema.equals(
        mb.batch_schema(3, with_label=True, with_event_id=True), check_metadata=False
    )
    assert b.schema.field(mb.EVENT_TIME).type == pa.timestamp("us", tz="UTC")
    assert mb.num_features(b) == 3
    assert mb.min_event_time_us(b) == 0


def test_features_are_zero_copy_views_of_the_arrow_buffer():
    b = _batch()
    arr = mb.features_numpy(b)
    buf = b.column(mb.FEATURES).flatten().buffers()[1]
    assert arr.ctypes.data == buf.address
    t = mb.features_tensor(b)
    assert t.data_ptr() == buf.address
    assert t.dtype == torch.float32 and tuple(t.shape) == (5, 3)


def test_zero_copy_respects_slices():
    b = _batch(10).slice(3, 4)
    np.testing.assert_array_equal(mb.features_numpy(b), mb.features_numpy(_batch(10))[3:7])
    np.testing.assert_array_equal(mb.event_times_us(b), np.arange(3, 7) * 1_000_000)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.drop_columns([mb.KEY]), "missing column 'key'"),
        (
            lambda b: b.set_column(1, mb.EVENT_TIME, b.column(1).cast(pa.timestamp("us"))),
            "timestamp[us, tz=UTC]",
        ),
        (
            lambda b: b.set_column(
                b.schema.get_field_index(mb.LABEL), mb.LABEL, b.column(mb.LABEL).cast(pa.float64())
            ),
            "'label' must be int64",
        ),
    ],
)
def test_validation_names_the_problem(mutate, message):
    with pytest.raises(mb.BatchSchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mb.validate_batch(mutate(_batch()))


def test_make_batch_rejects_mismatched_columns():
    with pytest.raises(ValueError, match="event_times_us must have 2 entries"):
        mb.make_batch(["a", "b"], [1], np.zeros((2, 1)))
    with pytest.raises(ValueError, match="features must be 2-D"):
        mb.make_batch(["a"], [1], np.zeros(3))


def test_sort_concat_chunks_roundtrip():
    b = _batch(7)
    shuffled = mb.take(b, np.array([3, 1, 6, 0, 2, 5, 4]))
    assert mb.sort_by_time(shuffled).column(mb.EVENT_ID).to_pylist() == list(range(7))
    parts = mb.chunks(b, 3)
    assert [p.num_rows for p in parts] == [3, 3, 1]
    assert mb.concat(parts).equals(b)


@pytest.mark.parametrize(("key", "n"), [("stream", 5), ("", 3), ("clé-ü", 4), ("x", 0)])
def test_constant_keys_equal_a_built_string_column(key, n):
    built = mb.constant_keys(key, n)
    assert built.equals(pa.array([key] * n, type=pa.string()))
    built.validate(full=True)


@pytest.mark.parametrize(
    "keys",
    [["a"] * 5, ["ab", "ba"], ["a", "aa"], ["", ""], ["", "a"], ["é", "é"], ["aa", "a", "aaa"],
     ["a", "b", "a"], ["x"], []],
)  # fmt: skip
def test_key_codes_match_dictionary_encoding(keys):
    """One key (the fast path) or several: codes and keys as Arrow encodes them."""
    column = pa.array(keys, type=pa.string())
    codes, names = mb.key_codes(pa.RecordBatch.from_arrays([column], names=[mb.KEY]))
    encoded = column.dictionary_encode()
    assert codes.tolist() == encoded.indices.to_pylist()
    assert names == encoded.dictionary.to_pylist()


def test_key_codes_of_a_sliced_batch():
    batch = pa.RecordBatch.from_arrays([pa.array(["x", "y", "y", "y", "z"])], names=[mb.KEY])
    assert mb.key_codes(batch.slice(1, 3))[1] == ["y"]
    assert mb.key_codes(batch.slice(0, 2))[1] == ["x", "y"]
    assert mb.key_codes(batch.slice(4, 1))[1] == ["z"]


def _dictionary_batch(indices, dictionary):
    column = pa.DictionaryArray.from_arrays(pa.array(indices, pa.int32()), pa.array(dictionary))
    return pa.RecordBatch.from_arrays([column], names=[mb.KEY])


@pytest.mark.parametrize(
    ("indices", "dictionary"),
    [
        ([0, 1, 0, 2], ["a", "b", "c"]),  # every entry used
        ([2, 2, 0], ["a", "b", "c"]),  # "b" unused: not a key of this batch
        ([1, 1], ["a", "b"]),
        ([0, 1, 2, 1], ["a", "b", "a"]),  # a value twice (Arrow allows it): one key
        ([], ["a"]),
    ],
)
def test_key_codes_of_dictionary_keys_group_like_the_strings(indices, dictionary):
    batch = _dictionary_batch(indices, dictionary)
    codes, names = mb.key_codes(batch)
    strings = batch.column(mb.KEY).to_pylist()
    assert [names[c] for c in codes] == strings  # every row maps to its own key
    assert sorted(names) == sorted(set(strings))  # each present key once, no absent ones
    plain = mb.plain_keys(batch)
    assert plain.column(mb.KEY).type == pa.string() and plain.column(mb.KEY).to_pylist() == strings


def test_dictionary_keys_concat_with_plain_keys_and_null_dictionary_values_are_refused():
    encoded = _dictionary_batch([1, 0], ["a", "b"])
    plain = pa.RecordBatch.from_arrays([pa.array(["c"])], names=[mb.KEY])
    assert mb.concat([encoded, plain]).column(mb.KEY).to_pylist() == ["b", "a", "c"]
    both = mb.concat([encoded, _dictionary_batch([0], ["z"])])
    assert both.column(mb.KEY).to_pylist() == ["b", "a", "z"]
    batch = _batch(2)
    with_null = pa.DictionaryArray.from_arrays(
        pa.array([0, 0], pa.int32()), pa.array([None], pa.string())
    )
    with pytest.raises(mb.BatchSchemaError, match="null"):
        mb.validate_batch(batch.set_column(0, mb.KEY, with_null))
    mb.validate_batch(batch.set_column(0, mb.KEY, batch.column(0).dictionary_encode()))
