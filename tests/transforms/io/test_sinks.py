"""JSONL encoding of micro-batches: the vectorized path writes what json.dumps would."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.io.sinks import _rows_one_by_one, batch_to_json_lines

T0 = 1_767_225_600_000_000


def decoded(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode().splitlines()]


def test_every_column_type_matches_the_row_by_row_encoding():
    batch = pa.RecordBatch.from_pydict(
        {
            "key": pa.array(["plain", 'quote " and \\ and \n', None, "ünïcode"]),
            "event_time": pa.array(
                [T0, T0 + 123_456, T0 + 1, T0 + 10**6], pa.timestamp("us", tz="UTC")
            ),
            "n": pa.array([1, -2, None, 2**40], pa.int64()),
            "flag": pa.array([True, False, None, True]),
            "score": pa.array([0.1, 2.0, float("nan"), float("-inf")], pa.float32()),
            "x": pa.FixedSizeListArray.from_arrays(
                pa.array([0.5, -1.0, 1e-7, 3.0, 0.0, 2.5, -0.25, 1.0], pa.float32()), 2
            ),
        }
    )
    fast = decoded(batch_to_json_lines(batch))
    slow = [json.loads(line) for line in _rows_one_by_one(batch)]
    assert fast == slow
    assert fast[2]["score"] is None and fast[3]["score"] is None  # JSON has no NaN or inf
    assert fast[1]["event_time"] == "2026-01-01T00:00:00.123456Z"
    assert isinstance(fast[1]["score"], float)  # 2.0 stays a float, not 2
    assert decoded(batch_to_json_lines(batch.slice(1, 2))) == fast[1:3]  # offsets respected


def test_types_without_a_vectorized_encoding_take_the_row_path():
    batch = pa.RecordBatch.from_pydict({"ids": pa.array([[1, 2], [], None])})
    assert decoded(batch_to_json_lines(batch)) == [{"ids": [1, 2]}, {"ids": []}, {"ids": None}]
    assert batch_to_json_lines(batch.slice(0, 0)) == b""
    # The row path writes what the vectorized one would: null for NaN (also in lists),
    # zone-less timestamps as UTC whatever the local zone.
    odd = pa.RecordBatch.from_pydict(
        {
            "x": pa.array([[1.0, float("nan")], None], pa.list_(pa.float64())),
            "t": pa.array([0, 1], pa.timestamp("us")),
        }
    )
    assert decoded(batch_to_json_lines(odd)) == [
        {"x": [1.0, None], "t": "1970-01-01T00:00:00.000000Z"},
        {"x": None, "t": "1970-01-01T00:00:00.000001Z"},
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.text(max_size=12), st.integers(-(2**62), 2**62), st.floats(width=32)),
        min_size=1,
        max_size=20,
    )
)
def test_any_strings_ints_and_floats_round_trip(rows):
    keys, ints, floats = zip(*rows, strict=True)
    batch = pa.RecordBatch.from_pydict(
        {"k": pa.array(keys), "i": pa.array(ints, pa.int64()), "f": pa.array(floats, pa.float32())}
    )
    for row, k, i, f in zip(decoded(batch_to_json_lines(batch)), keys, ints, floats, strict=True):
        assert row["k"] == k and row["i"] == i
        assert row["f"] == (float(np.float32(f)) if np.isfinite(f) else None)


def test_dictionary_columns_write_their_values():
    column = pa.DictionaryArray.from_arrays(
        pa.array([1, 0, None, 1], pa.int32()), pa.array(["a", 'q"uote'])
    )
    batch = pa.RecordBatch.from_arrays([column], names=["key"])
    assert decoded(batch_to_json_lines(batch)) == [
        {"key": 'q"uote'}, {"key": "a"}, {"key": None}, {"key": 'q"uote'}
    ]  # fmt: skip


def test_part_files_hold_plain_string_keys_whatever_the_batches_carried():
    import io

    import pyarrow.parquet as pq

    from transforms.io.sinks import _BatchWriter

    encoded = pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), pa.array(["a", "b"]))
    batches = [
        pa.RecordBatch.from_arrays([encoded], names=["key"]),
        pa.RecordBatch.from_arrays([pa.array(["c"])], names=["key"]),  # plain, same bundle
    ]
    (parquet, jsonl), rows = _BatchWriter("unused", "rows", ("parquet", "jsonl")).encode(batches)
    table = pq.read_table(io.BytesIO(parquet))
    assert rows == 3 and table.schema.field("key").type == pa.string()
    assert table.column("key").to_pylist() == ["a", "b", "c"]
    assert [r["key"] for r in decoded(jsonl)] == ["a", "b", "c"]


def test_window_rows_read_back_with_their_schema_whatever_the_keys_look_like(tmp_path):
    from model.stats import STATS_SCHEMA
    from model.vocabulary import STATS_FIELDS
    from transforms.io.sinks import batch_to_json_lines, read_jsonl_table

    def rows(key: str, start: int) -> pa.RecordBatch:
        values = [key, start, start + 10, "ON_TIME", 0, False, 3, None, 0, None, None, None]
        return pa.RecordBatch.from_pylist([dict(zip(STATS_FIELDS, values, strict=True))],
                                          schema=STATS_SCHEMA)  # fmt: skip

    # a key that looks like a date, and one that does not, in two part files;
    # all-null columns in both
    (tmp_path / "part-a.jsonl").write_bytes(batch_to_json_lines(rows("2024-01-01", 0)))
    (tmp_path / "part-b.jsonl").write_bytes(batch_to_json_lines(rows("sensor", 10)))
    table = read_jsonl_table(str(tmp_path), schema=STATS_SCHEMA)
    assert table is not None and table.schema == STATS_SCHEMA
    assert table.column("key").to_pylist() == ["2024-01-01", "sensor"]
    assert table.column("accuracy").null_count == 2
    assert read_jsonl_table(str(tmp_path / "none"), schema=STATS_SCHEMA) is None
