"""JSON records to micro-batches: a whole poll read at once gives what reading it record
by record gives (rows, values, dead letters), whatever the records hold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.streams import records
from model.streams.records import RecordFormat, decode_records, infer_format

FMT = RecordFormat(features=("a", "b"), label_column="y", num_classes=2)
TIMES = st.sampled_from(
    [
        "2024-01-01 00:00:00",
        "2024-01-01T00:00:01",
        "2024-01-01T00:00:00.123Z",
        "2024-01-01T00:00:00.5+02:00",
        "2024-02-30 00:00:00",
        "2024-01-01 24:00",
        1_700_000_000,
        1.5,
        "abc",
        None,
        True,
    ]  # fmt: skip
)
VALUES = st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.integers(-5, 5),
                   st.sampled_from(["1", None, True, 1e40]))  # fmt: skip
RECORD = st.fixed_dictionaries(
    {"timestamp": TIMES, "a": VALUES, "b": VALUES},
    optional={
        "y": st.sampled_from([0, 1, 2, 1.0, -1, "a", None]),
        "key": st.sampled_from(["k", "", 3, None]),
        "event_id": st.sampled_from([7, 8, "x", None, 2.5]),
    },
)
RAW = st.one_of(
    RECORD.map(lambda r: json.dumps(r).encode()),
    st.sampled_from([b"{oops", b"", b"[]", b"null", b'{"timestamp": 1, "a": 1, "b": 2}\n{}']),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(RAW, min_size=1, max_size=12), st.integers(0, 3))
def test_a_poll_at_once_reads_as_record_by_record(values, partition):
    offsets = list(range(100, 100 + len(values)))
    fast = decode_records(values, partition=partition, offsets=offsets, fmt=FMT, source="t")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(records, "_by_columns", lambda *args: None)
        slow = decode_records(values, partition=partition, offsets=offsets, fmt=FMT, source="t")
    assert [dict(d) for d in fast.dead] == [dict(d) for d in slow.dead]
    assert (fast.batch is None) == (slow.batch is None)
    assert fast.batch is None or fast.batch.equals(slow.batch)
    rows = 0 if fast.batch is None else fast.batch.num_rows
    assert rows + sum(d.rows for d in fast.dead) == len(values)  # in = out + rejected


def test_the_format_is_told_from_the_first_object():
    values = [b"oops", json.dumps({"timestamp": 1, "key": "k", "z": 1.5, "a": 2, "y": 1,
                                   "name": "x", "flag": True}).encode()]  # fmt: skip
    fmt = infer_format(values, label_column="y")
    assert fmt.features == ("z", "a") and fmt.label_column == "y"
    with pytest.raises(ValueError, match="none of the first 1 records"):
        infer_format([b"[1, 2]"])
