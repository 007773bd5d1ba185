"""CSV input: every line is a prediction or a dead letter with its reason."""

from __future__ import annotations

import os

import pytest

from model.streams.csv_parse import CsvFormat, parse_lines, parse_timestamp_us
from pipelines import main
from transforms.io import read_jsonl_dir, read_parquet_dir

NAB = os.path.join(os.path.dirname(__file__), "..", "..", "..", "benchmarks", "data", "nab")

GOOD = [
    "2026-01-01 00:00:00,k1,1.0,2.0,0",
    "2026-01-01T00:00:01Z,k2,1.5,-2.0,1",
    "1767225602,k1,0.5,0.25,1",
]
BAD = [
    ("2026-01-01 00:00:03,k1,1.0,0", "wrong number of columns"),
    ("not-a-time,k1,1.0,2.0,0", "unparseable timestamp"),
    ("2026-01-01 00:00:04,k1,abc,2.0,0", "non-numeric value 'abc' in column 'f1'"),
    ("2026-01-01 00:00:05,k1,nan,2.0,0", "non-finite value"),
    ("2026-01-01 00:00:06,k1,inf,2.0,1", "non-finite value"),
    ("0999-01-01 00:00:00,k1,1.0,2.0,0", "absurd timestamp"),
    ("2026-01-01 00:00:07,k1,1e40,2.0,0", "oversized value"),
    ("2026-01-01 00:00:08,k1,1.0,2.0,yes", "non-integer value 'yes' in column 'label'"),
    ("", "empty line"),
    ("2026-01-01 00:00:09,,1.0,2.0,0", "empty key"),
]
HEADER = "timestamp,key,f1,f2,label"


def write_csv(tmp_path, lines):
    path = tmp_path / "events.csv"
    path.write_text("\n".join([HEADER, *lines]) + "\n")
    return str(path)


def test_parse_sets_every_bad_row_aside_with_its_reason():
    lines = [HEADER] + [GOOD[0]] + [b for b, _ in BAD] + GOOD[1:]
    chunks = list(parse_lines(lines, CsvFormat(label_column="label", chunk_rows=4), "x.csv"))
    good = sum(c.batch.num_rows for c in chunks if c.batch is not None)
    dead = [d for c in chunks for d in c.dead]
    assert good == len(GOOD)
    assert len(dead) == len(BAD)
    for record, (raw, reason) in zip(dead, BAD, strict=True):
        assert reason in record["reason"]
        assert record["raw"] == raw
        assert record["rows"] == 1
    assert [d["line"] for d in dead] == list(range(3, 3 + len(BAD)))


def test_bad_header_is_a_clear_error():
    with pytest.raises(ValueError, match="label column 'y' not in header"):
        list(parse_lines([HEADER, GOOD[0]], CsvFormat(label_column="y"), "x.csv"))
    with pytest.raises(ValueError, match="NAB files have the header"):
        list(parse_lines(["a,b", "1,2"], CsvFormat(kind="nab"), "x.csv"))


def test_timestamps_are_utc():
    assert parse_timestamp_us("1970-01-01 00:00:01") == 1_000_000
    assert parse_timestamp_us("1970-01-01T01:00:00+01:00") == 0
    assert parse_timestamp_us("1.5") == 1_500_000
    # records from before 1970 are real (the weather stream starts in 1949)
    assert parse_timestamp_us("1969-12-31 23:59:59") == -1_000_000


@pytest.mark.parametrize("streaming", [False, True], ids=["bounded", "streaming"])
def test_count_invariant_on_malformed_csv(tmp_path, streaming):
    lines = GOOD + [b for b, _ in BAD] + [f"2026-01-01 00:01:{i:02d},k3,{i},1,0" for i in range(40)]
    path = write_csv(tmp_path, lines)
    out = str(tmp_path / "out")
    args = ["--source", "csv", "--input", path, "--label-column", "label", "--output", out]
    args += ["--streaming" if streaming else "--no-streaming", "--watermark-lag", "5"]
    assert main.main(args) == 0
    predictions = read_parquet_dir(os.path.join(out, "predictions"))
    dead = read_jsonl_dir(os.path.join(out, "dead_letter"))
    assert predictions is not None
    assert predictions.num_rows + sum(d["rows"] for d in dead) == len(lines)
    assert sorted(d["reason"] for d in dead) == sorted(
        next(d["reason"] for d in dead if d["raw"] == raw) for raw, _ in BAD
    )
    assert set(predictions.column("label").to_pylist()) <= {0, 1}


def test_nab_files_get_labels_from_the_anomaly_windows(tmp_path):
    path = os.path.join(NAB, "realKnownCause", "ambient_temperature_system_failure.csv")
    lines = open(path, encoding="utf-8").read().splitlines()
    chunks = list(parse_lines(lines, CsvFormat(kind="nab", chunk_rows=1024), path))
    labels = [v for c in chunks for v in c.batch.column("label").to_pylist()]
    assert len(labels) == len(lines) - 1
    assert 0 < sum(labels) < len(labels)
    assert {k for c in chunks for k in c.batch.column("key").to_pylist()} == {
        "realKnownCause/ambient_temperature_system_failure.csv"
    }
