"""Property: whatever the input lines, every one is either a row or a dead letter."""

from __future__ import annotations

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
    st.sampled_from(["nan", "inf", "-inf", "1e999", "", "1900-01-01", "NaT", '"', "1,2"]),
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
