"""CSV rows to micro-batches, with every bad row set aside with its reason.

Two formats:

``generic``
    A header row; a time column (``timestamp`` by default), an optional ``key``
    column (default: the file's stem), an optional label column (integer class), an
    optional ``event_id`` column (default: the line number); every other column is a
    numeric feature.
``nab``
    The Numenta Anomaly Benchmark layout ``timestamp,value``. The key is the file's
    ``folder/name.csv`` (as in NAB's label files); when ``labels/combined_windows.json``
    is found above the file, rows inside a labelled anomaly window get ``label = 1``,
    others ``0``.

Timestamps are ISO 8601 (``2014-07-01 00:00:00``, ``...T...Z``, offsets allowed) or
epoch seconds; naive ones are UTC. Pure Python: usable without a pipeline.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from model import batch as mb
from model.vocabulary import EVENT_ID, KEY, DeadLetter, Stage

# Events outside these years are rejected as absurd timestamps (real records reach
# back centuries: before 1970 is a negative event time, which Beam handles).
MIN_YEAR, MAX_YEAR = 1000, 2200
MAX_ABS_VALUE = 1e30


@dataclass(frozen=True)
class CsvFormat:
    """How to read a CSV file into micro-batches."""

    kind: Literal["generic", "nab"] = "generic"
    time_column: str = "timestamp"
    key_column: str = KEY
    label_column: str | None = None
    event_id_column: str = EVENT_ID
    chunk_rows: int = 4_096
    allowed_keys: frozenset[str] | None = None
    num_classes: int | None = None  # labels outside [0, num_classes) are dead-lettered

    def __post_init__(self) -> None:
        if self.num_classes is not None and self.num_classes < 2:
            msg = f"num_classes must be >= 2, got {self.num_classes!r}"
            raise ValueError(msg)
        if self.kind not in ("generic", "nab"):
            msg = f"csv format must be 'generic' or 'nab', got {self.kind!r}"
            raise ValueError(msg)
        if self.chunk_rows <= 0:
            msg = f"chunk_rows must be > 0, got {self.chunk_rows!r}"
            raise ValueError(msg)


@dataclass
class _Columns:
    time: int
    features: list[int]
    names: list[str]
    key: int | None = None
    label: int | None = None
    event_id: int | None = None
    width: int = 0


@dataclass
class ParsedChunk:
    """A micro-batch of good rows and the dead-letter records of bad ones."""

    batch: pa.RecordBatch | None
    dead: list[DeadLetter] = field(default_factory=list)


def parse_timestamp_us(text: str) -> int:
    """Microseconds since the epoch (UTC) of an ISO 8601 or epoch-seconds string."""
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds):
            msg = f"non-finite timestamp {text!r}"
            raise ValueError(msg)
        dt = datetime.fromtimestamp(seconds, tz=UTC) if abs(seconds) < 1e11 else None
        if dt is None:
            msg = f"timestamp {text!r} is out of range"
            raise ValueError(msg)
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            msg = f"unparseable timestamp {text!r}"
            raise ValueError(msg) from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
    if not MIN_YEAR <= dt.year < MAX_YEAR:
        msg = f"absurd timestamp {text!r} (year outside {MIN_YEAR}..{MAX_YEAR - 1})"
        raise ValueError(msg)
    delta = dt - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * mb.US_PER_SECOND + delta.microseconds


def _resolve_columns(header: list[str], fmt: CsvFormat) -> _Columns:
    names = [h.strip() for h in header]
    if fmt.kind == "nab":
        if names[:2] != ["timestamp", "value"] or len(names) != 2:
            msg = f"NAB files have the header 'timestamp,value', got {','.join(names)!r}"
            raise ValueError(msg)
        return _Columns(time=0, features=[1], names=names, width=2)
    index = {n: i for i, n in enumerate(names)}
    if fmt.time_column not in index:
        msg = f"time column {fmt.time_column!r} not in header {names!r}"
        raise ValueError(msg)
    if fmt.label_column is not None and fmt.label_column not in index:
        msg = f"label column {fmt.label_column!r} not in header {names!r}"
        raise ValueError(msg)
    special = {fmt.time_column, fmt.key_column, fmt.event_id_column, fmt.label_column}
    features = [i for i, n in enumerate(names) if n not in special]
    if not features:
        msg = f"no feature columns in header {names!r}"
        raise ValueError(msg)
    return _Columns(
        time=index[fmt.time_column],
        features=features,
        names=names,
        key=index.get(fmt.key_column),
        label=index.get(fmt.label_column) if fmt.label_column else None,
        event_id=index.get(fmt.event_id_column),
        width=len(names),
    )


def _float(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        msg = f"non-numeric value {text!r} in column {column!r}"
        raise ValueError(msg) from None
    return _usable(value, text, column)


def _usable(value: float, raw: object, column: str, kind: str = "column") -> float:
    """``value`` (read from ``raw``) if a feature can hold it: finite, not absurd."""
    if not math.isfinite(value):
        msg = f"non-finite value {raw!r} in {kind} {column!r}"
        raise ValueError(msg)
    if abs(value) > MAX_ABS_VALUE:
        msg = f"oversized value {raw!r} in {kind} {column!r} (|x| > {MAX_ABS_VALUE:g})"
        raise ValueError(msg)
    return value


def usable_features(feats: np.ndarray) -> bool:
    """:func:`_usable` for every value at once."""
    return bool(np.all(np.isfinite(feats)) and not np.any(np.abs(feats) > MAX_ABS_VALUE))


def int_value(text: str, column: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer():  # "1.0" is a class; "abc", "nan", "0.5" are not
        msg = f"non-integer value {text!r} in column {column!r}"
        raise ValueError(msg) from None
    return int(value)


def _label(text: str, column: str, num_classes: int | None) -> int:
    return check_class(int_value(text, column), text.strip(), f"column {column!r}", num_classes)


def check_class(label: int, raw: object, where: str, num_classes: int | None) -> int:
    """``label`` if it is a class (``raw``: as given, ``where``: the column or field)."""
    if label < 0 or (num_classes is not None and label >= num_classes):
        known = "" if num_classes is None else f" in [0, {num_classes})"
        raise ValueError(f"label {raw!r} in {where} is not a class{known}")
    return label


def known_classes(labels: np.ndarray, num_classes: int | None) -> bool:
    """:func:`check_class` for every label at once."""
    return not (np.any(labels < 0) or (num_classes is not None and np.any(labels >= num_classes)))


def in_years(whole_us: np.ndarray) -> bool:
    """Whether every time (microseconds since the epoch) falls in the years a
    timestamp may have (as :func:`parse_timestamp_us` checks one)."""
    years = whole_us.astype("datetime64[us]").astype("datetime64[Y]").astype(np.int64) + 1970
    return not (np.any(years < MIN_YEAR) or np.any(years >= MAX_YEAR))


def anomaly_windows(path: str) -> list[tuple[int, int]] | None:
    """NAB labelled windows for ``path``, if ``labels/combined_windows.json`` is found."""
    folder = os.path.dirname(os.path.abspath(path))
    rel = os.path.join(os.path.basename(folder), os.path.basename(path))
    root = os.path.dirname(folder)
    labels = os.path.join(root, "labels", "combined_windows.json")
    if not os.path.exists(labels):
        return None
    with open(labels, encoding="utf-8") as f:
        windows = json.load(f).get(rel.replace(os.sep, "/"))
    if windows is None:
        return None
    return [(parse_timestamp_us(a), parse_timestamp_us(b)) for a, b in windows]


def nab_key(path: str) -> str:
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return f"{folder}/{os.path.basename(path)}"


class RowBuilder:
    """Accumulates good rows of one chunk."""

    def __init__(self, with_label: bool) -> None:
        self.keys: list[str] = []
        self.times: list[int] = []
        self.features: list[list[float]] = []
        self.labels: list[int] | None = [] if with_label else None
        self.ids: list[int] = []

    def __len__(self) -> int:
        return len(self.times)

    def add(
        self, key: str, t_us: int, feats: list[float], event_id: int, label: int | None
    ) -> None:
        self.keys.append(key)
        self.times.append(t_us)
        self.features.append(feats)
        self.ids.append(event_id)
        if self.labels is not None:
            self.labels.append(label if label is not None else 0)

    def build(self) -> pa.RecordBatch | None:
        if not self.times:
            return None
        return mb.make_batch(
            self.keys,
            np.array(self.times, dtype=np.int64),
            np.array(self.features, dtype=np.float32),
            labels=self.labels,
            event_ids=self.ids,
        )


def check_header(path: str, fmt: CsvFormat) -> int:
    """The number of feature columns of ``path``; ``ValueError`` if it cannot be read
    or its header cannot be used."""
    return len(feature_names(path, fmt))


def header_names(path: str) -> list[str]:
    """The column names of ``path``'s header; ``ValueError`` if it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as f:
            header = f.readline()
    except OSError as err:
        msg = f"{path}: cannot read: {err.strerror}"
        raise ValueError(msg) from None
    if not header.strip():
        msg = f"{path}: empty file (no header)"
        raise ValueError(msg)
    return [h.strip() for h in next(csv.reader([header]))]


def feature_names(path: str, fmt: CsvFormat) -> list[str]:
    """The feature columns of ``path``, in the order the model sees them;
    ``ValueError`` as :func:`check_header`."""
    cols = _resolve_columns(header_names(path), fmt)
    return [cols.names[i] for i in cols.features]


def parse_lines(lines: Iterable[str], fmt: CsvFormat, source: str) -> Iterator[ParsedChunk]:
    """Parse CSV text lines (header first) into chunks of at most ``fmt.chunk_rows`` rows.

    A bad header raises ``ValueError`` (nothing can be read); every bad data row
    becomes a :class:`model.vocabulary.DeadLetter` (stage ``parse``, one row) whose
    payload names the ``source``, the ``line`` number and the ``raw`` text.
    """
    it = iter(lines)
    header_line = next(it, None)
    if header_line is None:
        msg = f"{source}: empty file (no header)"
        raise ValueError(msg)
    cols = _resolve_columns(next(csv.reader([header_line])), fmt)
    file = _File(
        source,
        fmt,
        cols,
        nab_key(source) if fmt.kind == "nab" else os.path.basename(source),
        anomaly_windows(source) if fmt.kind == "nab" else None,
    )
    line_no = 1
    while chunk := list(itertools.islice(it, fmt.chunk_rows)):
        first, line_no = line_no + 1, line_no + len(chunk)
        yield _by_columns(file, chunk, first) or _by_rows(file, chunk, first)


@dataclass(frozen=True)
class _File:
    """What reading one file's rows needs besides the rows."""

    source: str
    fmt: CsvFormat
    cols: _Columns
    default_key: str
    nab_windows: list[tuple[int, int]] | None


def _by_rows(file: _File, lines: list[str], first_line_no: int) -> ParsedChunk:
    """One chunk of data lines, row by row: each bad row a dead letter with its reason."""
    cols, fmt, nab_windows = file.cols, file.fmt, file.nab_windows
    builder = RowBuilder(cols.label is not None or nab_windows is not None)
    dead: list[DeadLetter] = []
    for line_no, line in enumerate(lines, start=first_line_no):
        try:
            row = next(csv.reader([line]), [])
            if not row:
                raise ValueError("empty line")
            if len(row) != cols.width:
                msg = f"wrong number of columns: expected {cols.width}, got {len(row)}"
                raise ValueError(msg)
            t_us = parse_timestamp_us(row[cols.time])
            feats = [_float(row[i], cols.names[i]) for i in cols.features]
            key = row[cols.key].strip() if cols.key is not None else file.default_key
            if not key:
                raise ValueError("empty key")
            if fmt.allowed_keys is not None and key not in fmt.allowed_keys:
                raise ValueError(f"unknown key {key!r}")
            event_id = (
                int_value(row[cols.event_id], "event_id") if cols.event_id is not None else line_no
            )
            label = None
            if cols.label is not None:
                label = _label(row[cols.label], cols.names[cols.label], fmt.num_classes)
            elif nab_windows is not None:
                label = int(any(a <= t_us <= b for a, b in nab_windows))
        except (ValueError, csv.Error) as err:
            raw = line.rstrip("\r\n")
            payload = {"source": file.source, "line": line_no, "raw": raw}
            dead.append(DeadLetter(str(err), Stage.PARSE, rows=1, payload=payload))
        else:
            builder.add(key, t_us, feats, event_id, label)
    return ParsedChunk(builder.build(), dead)


# ISO 8601 date-times without a zone (naive: UTC), as numpy parses them
_NAIVE_ISO = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$"
_ODD = re.compile(  # control characters but tab and line ends, and non-ASCII spaces
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]"
)


_PLAIN = bytes(c for c in range(128) if c in (9, 10) or 32 <= c < 127 and c != ord('"'))


def _plain_bytes(text: str) -> bytes | None:
    """``text`` as UTF-8 when it holds no quote and no character of :data:`_ODD`."""
    if text.isascii():
        data = text.encode("ascii")
        return None if data.translate(None, _PLAIN) else data
    return None if '"' in text or _ODD.search(text) else text.encode()


def _by_columns(file: _File, lines: list[str], first_line_no: int) -> ParsedChunk | None:
    """One chunk of data lines parsed column by column (Arrow, numpy), or None when any
    row would not parse or needs a rule only the row-by-row path applies: then
    :func:`_by_rows` reads the chunk and gives each bad row its reason. It accepts no
    row that path would reject, and reads every value as it does (Arrow's number parser
    takes a subset of what Python's ``float``/``int`` take, rounding alike)."""
    cols, fmt = file.cols, file.fmt
    # each line a row, whether or not it ends in a line break (as csv.reader reads them);
    # quoting: the row-by-row reader's rules; odd characters: Arrow trims some that
    # Python's float() and int() refuse (\x1c-\x1f)
    data = _plain_bytes("\n".join(line.rstrip("\r\n") for line in lines))
    if data is None:
        return None
    try:
        table = _split(data, cols.width)
        if table.num_rows != len(lines):
            return None
        columns = [pc.utf8_trim_whitespace(c.combine_chunks()) for c in table.columns]
        times = parse_times_us(columns[cols.time])
        feats = np.column_stack([_numbers(columns[i], pa.float64()) for i in cols.features])
        ids = (
            _numbers(columns[cols.event_id], pa.int64())
            if cols.event_id is not None
            else np.arange(first_line_no, first_line_no + len(lines), dtype=np.int64)
        )
        labels = None if cols.label is None else _numbers(columns[cols.label], pa.int64())
    except pa.ArrowInvalid:
        return None
    if times is None or not usable_features(feats):
        return None
    rows = table.num_rows
    keys: pa.Array = pa.repeat(file.default_key, rows).cast(pa.string())
    if cols.key is not None:
        keys = columns[cols.key]
        if pc.any(pc.equal(pc.utf8_length(keys), 0)).as_py():
            return None
    if (
        fmt.allowed_keys is not None
        and not pc.all(pc.is_in(keys, pa.array(sorted(fmt.allowed_keys), pa.string()))).as_py()
    ):
        return None
    if labels is not None:
        if not known_classes(labels, fmt.num_classes):
            return None
    elif file.nab_windows is not None:
        labels = np.zeros(rows, dtype=np.int64)
        for a, b in file.nab_windows:
            labels |= (times >= a) & (times <= b)
    return ParsedChunk(mb.make_batch(keys, times, feats, labels=labels, event_ids=ids))


def _split(data: bytes, width: int) -> pa.Table:
    """Lines without quotes split at commas into ``width`` string columns, as
    :mod:`csv` splits them (``ArrowInvalid``: a row of another width, or an empty
    line)."""
    names = [f"c{i}" for i in range(width)]
    return pa_csv.read_csv(
        pa.py_buffer(data),
        read_options=pa_csv.ReadOptions(column_names=names, use_threads=False,
                                        block_size=max(1 << 20, 2 * len(data))),
        parse_options=pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )  # fmt: skip


def _numbers(texts: pa.Array, kind: pa.DataType) -> np.ndarray:
    return texts.cast(kind).to_numpy()  # ArrowInvalid: not all numbers


def parse_times_us(texts: pa.Array) -> np.ndarray | None:
    """Microseconds since the epoch of naive ISO 8601 times (UTC) or whole epoch
    seconds (strings), when every one is such and in range; else None (never an
    exception: the row-by-row path then gives each bad one its reason)."""
    try:
        if pc.all(pc.match_substring_regex(texts, _NAIVE_ISO)).as_py():
            # ArrowInvalid: a date that is not one (February 30, 24:00, a 60th second)
            whole_us = texts.cast(pa.timestamp("us")).cast(pa.int64()).to_numpy()
            return whole_us if in_years(whole_us) else None
        return epoch_seconds_us(_numbers(texts, pa.float64()))
    except (pa.ArrowInvalid, ValueError):
        return None


def epoch_seconds_us(seconds: np.ndarray) -> np.ndarray | None:
    """Microseconds since the epoch of whole epoch seconds, when every one is such and
    in range; else None (fractions are rounded as :func:`parse_timestamp_us` rounds
    them, one by one)."""
    seconds = np.asarray(seconds, dtype=np.float64)
    if not np.all(np.isfinite(seconds)) or np.any(np.abs(seconds) >= 1e11):
        return None
    if np.any(seconds != np.floor(seconds)):
        return None
    whole_us = seconds.astype(np.int64) * mb.US_PER_SECOND
    return whole_us if in_years(whole_us) else None


HEAD_ROWS = 2_048  # the rows a file's time scale and classes are told from


def head_batches(path: str, fmt: CsvFormat, rows: int = HEAD_ROWS) -> list[pa.RecordBatch]:
    """The good rows among the first ``rows`` data rows of ``path``."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        lines = list(itertools.islice(f, rows + 1))
    return [c.batch for c in parse_lines(lines, fmt, path) if c.batch is not None]


def head_event_times_us(batches: list[pa.RecordBatch]) -> np.ndarray:
    """The event times of ``batches`` (what the data's time scale is told from)."""
    times = [mb.event_times_us(b) for b in batches]
    return np.concatenate(times) if times else np.zeros(0, dtype=np.int64)


def head_num_classes(batches: list[pa.RecordBatch]) -> int | None:
    """The classes the labels of ``batches`` show: the largest label seen at least
    twice and in at least 0.1% of the rows, plus one (at least 2), so that one stray
    label among the first rows does not make a class; None when they hold no label."""
    labels = [y for y in map(mb.labels_numpy, batches) if y is not None and len(y)]
    if not labels:
        return None
    values, counts = np.unique(np.concatenate(labels), return_counts=True)
    common = values[counts >= max(2, 0.001 * counts.sum())]
    return max(2, int(common.max()) + 1) if len(common) else 2
