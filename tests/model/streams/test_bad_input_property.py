"""Property: whatever the input lines, every one is either a row or a dead letter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.streams.csv_parse import CsvFormat, parse_lines

HEADER = "timestamp,key,f1,f2,label"
GOOD = st.builds(
    lambda s, k, a, b, y: f"2026-01-01 00:00:{s:02d},{k},{a},{b},{y}",
    st.integers(0, 59),
    st.sampled_from(["a", "b"]),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(0, 1),
)
FIELD = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "1e999",
            "",
            "1900-01-01",
            "NaT",
            '"',
            "1,2",
            "2024-02-30 00:00:00",
            "2024-01-01 24:00",
            "2024-01-01 23:59:60",
            "1\x1f",
            " 1\xa0",
            "1\x85",
        ]
    ),  # fmt: skip
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers().map(str),
)
BAD = st.lists(FIELD, min_size=0, max_size=8).map(",".join)
LINE = st.one_of(GOOD, BAD, st.text(max_size=40))


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, max_size=60), st.integers(1, 16))
def test_in_equals_out_plus_rejected(lines, chunk_rows):
    # One physical line per input line: embedded newlines would make several.
    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    fmt = CsvFormat(label_column="label", chunk_rows=chunk_rows, allowed_keys=frozenset("ab"))
    chunks = list(parse_lines([HEADER, *lines], fmt, "fuzz.csv"))
    good = sum(c.batch.num_rows for c in chunks if c.batch is not None)
    dead = [d for c in chunks for d in c.dead]
    assert good + len(dead) == len(lines)
    assert all(d["reason"] and d["rows"] == 1 for d in dead)
    assert sorted(d["line"] for d in dead) == sorted(set(d["line"] for d in dead))


ROW_BY_ROW = st.sampled_from(
    [
        "2026-01-01T00:00:{s:02d},{k},{a},{b},{y}",  # ISO with a T
        "{e},{k},{a},{b},{y}",  # epoch seconds
        "2026-01-01 00:00:{s:02d}.25, {k} ,{a} , {b},{y}",  # padded fields, fractions
    ]
)
VARIED = st.builds(
    lambda form, s, k, a, b, y: form.format(s=s, e=1_700_000_000 + s, k=k, a=a, b=b, y=y),
    ROW_BY_ROW,
    st.integers(0, 59),
    st.sampled_from(["a", "b", "c", ""]),
    st.one_of(st.floats(-1e6, 1e6, allow_nan=False).map(str), st.sampled_from(["1_0", ".5"])),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["0", "1", "1.0", "+1", "2", "-1"]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(GOOD, VARIED, LINE), max_size=60), st.integers(1, 16))
def test_whole_chunks_read_as_row_by_row(lines, chunk_rows):
    # The column-by-column reading of a whole chunk is a shortcut: the same rows, values
    # and dead letters as the row-by-row path on every input.
    from model.streams import csv_parse

    lines = [line.replace("\n", " ").replace("\r", " ") for line in lines]
    fmt = CsvFormat(label_column="label", chunk_rows=chunk_rows, allowed_keys=frozenset("ab"))
    fast = list(parse_lines([HEADER, *lines], fmt, "fuzz.csv"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(csv_parse, "_by_columns", lambda *args: None)
        slow = list(parse_lines([HEADER, *lines], fmt, "fuzz.csv"))
    assert [c.dead for c in fast] == [c.dead for c in slow]
    for a, b in zip(fast, slow, strict=True):
        assert (a.batch is None) == (b.batch is None)
        assert a.batch is None or a.batch.equals(b.batch)


def test_clean_chunks_take_the_column_path(monkeypatch):
    from model.streams import csv_parse

    lines = [f"2026-01-01 00:00:{s:02d},{'ab'[s % 2]},{s / 3},{-s},{s % 2}" for s in range(60)]
    lines += [f"{1_700_000_000 + s},a,1,2,0\r\n" for s in range(40)]  # a Windows file's ends
    seen = []
    original = csv_parse._by_columns
    monkeypatch.setattr(
        csv_parse, "_by_columns", lambda *args: seen.append(original(*args)) or seen[-1]
    )
    fmt = CsvFormat(label_column="label", chunk_rows=20, allowed_keys=frozenset("ab"))
    chunks = list(parse_lines([HEADER, *lines], fmt, "clean.csv"))
    assert len(seen) == 5 and all(chunk is not None for chunk in seen)
    assert sum(c.batch.num_rows for c in chunks) == 100
