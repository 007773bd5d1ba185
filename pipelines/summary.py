"""The end-of-run summary, counted from what the sinks wrote.

Counting the output files (not Beam counters) makes ``in = out + rejected`` a real
check on every runner. Beam counters are read only for ``events_in`` when the source
could not count its events before the run; note that the legacy streaming
DirectRunner credits every bundle of a step to the first bundle's metrics container
(its state sampler caches the scoped state), so its counters are not usable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from model import vocabulary as v
from model.memory_control import MemoryConfig
from model.reco.events import RATING
from model.stats import STATS_SCHEMA
from model.streams.time_scale import utc
from model.vocabulary import NAMESPACE, Metric, Pane, Stage
from runners.flink.rest import JobFigures
from transforms.federated.learn import ROUND as FEDERATED_ROUND
from transforms.inference.memory_metrics import ROLES, metric_name
from transforms.io.sinks import (
    count_parquet_rows,
    read_jsonl_dir,
    read_jsonl_table,
    read_parquet_dir,
)

COUNTERS = (
    Metric.EVENTS_IN,
    Metric.PREDICTIONS_OUT,
    Metric.DEAD_LETTERED,
    Metric.WINDOWS_FIRED,
    Metric.EVENTS_ON_TIME,
    Metric.EVENTS_LATE_ACCEPTED,
    Metric.EVENTS_LATE_DROPPED,
)


def counters(result: PipelineResult) -> dict[str, int]:
    """Our counters (namespace ``streaming_ml``), committed where the runner has them,
    summed over steps."""
    return {**dict.fromkeys(COUNTERS, 0), **_metrics(result)[0]}


def _metrics(result: PipelineResult) -> tuple[dict[str, int], dict[str, int]]:
    """Our counters summed over steps, and the largest value each distribution saw;
    committed figures where the runner has them, else attempted ones."""
    totals: dict[str, int] = {}
    largest: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for c in query["counters"]:
        value = c.committed if c.committed is not None else c.attempted
        totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + int(value or 0)
    for d in query["distributions"]:
        value = d.committed if d.committed is not None else d.attempted
        if value is not None and value.count:
            name = d.key.metric.name
            largest[name] = max(largest.get(name, int(value.max)), int(value.max))
    return totals, largest


def memory_figures(result: PipelineResult, config: MemoryConfig) -> dict[str, Any]:
    """Memory control's figures from the run's metrics (``memory_*.scoring`` and
    ``memory_*.learning``), with the strategy and budget they were measured against."""
    totals, largest = _metrics(result)
    roles = {
        role: {
            "steps": totals.get(metric_name(Metric.MEMORY_STEPS, role), 0),
            "over_budget": totals.get(metric_name(Metric.MEMORY_OVER_BUDGET, role), 0),
            "ooms": totals.get(metric_name(Metric.MEMORY_OOMS, role), 0),
            "peak_bytes": largest.get(metric_name(Metric.MEMORY_PEAK_BYTES, role), 0),
        }
        for role in ROLES
    }
    return {"strategy": config.strategy, "budget_bytes": config.budget_bytes, "roles": roles}


def memory_lines(m: dict[str, Any]) -> list[str]:
    budget = "no budget" if m["budget_bytes"] is None else f"budget {_size(m['budget_bytes'])}"
    head = f"memory           {m['strategy']}, {budget}"
    lines = [
        f"{head}, {role}: {f['steps']:,} measured passes, {f['over_budget']:,} over budget, "
        f"{f['ooms']:,} out-of-memory, peak {_size(f['peak_bytes'])}"
        for role, f in m["roles"].items()
        if f["steps"] or f["ooms"]
    ]
    return lines or [f"{head}: nothing measured (no pass ran through torch's allocator)"]


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


SHOWN_WINDOWS = 48  # window lines the summary prints at most


@dataclass(frozen=True)
class WindowAccuracy:
    """Prequential accuracy of one event-time window, over all keys and panes."""

    start_us: int
    events: int
    labelled: int
    correct: int
    min_version: int | None
    max_version: int | None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labelled if self.labelled else None


def _last_panes(panes: list[dict[str, Any]]) -> list[WindowAccuracy]:
    """Per window totals from accumulating pane rows: the last pane of each key (each
    pane holds all the window's events so far); versions over every pane."""
    chosen: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for p in panes:
        if p[v.WINDOW_START_US] is None:
            continue
        chosen.setdefault((p[v.WINDOW_START_US], p[v.KEY]), []).append(p)
    totals: dict[int, list[Any]] = {}
    for (start, _), rows in chosen.items():
        last = max(rows, key=lambda r: r[v.PANE_INDEX])
        t = totals.setdefault(start, [0, 0, 0, None, None])
        t[0] += last[v.EVENTS]
        t[1] += last[v.LABELLED]
        t[2] += round((last[v.ACCURACY] or 0.0) * last[v.LABELLED])
        for r in rows:
            if r.get(v.MIN_VERSION) is not None:
                t[3] = r[v.MIN_VERSION] if t[3] is None else min(t[3], r[v.MIN_VERSION])
                t[4] = r[v.MAX_VERSION] if t[4] is None else max(t[4], r[v.MAX_VERSION])
    return [WindowAccuracy(s, *totals[s]) for s in sorted(totals)]


def _summed(panes: pa.Table) -> list[WindowAccuracy]:
    """Per window totals from discarding pane rows: sums per window start, column by
    column (a sparse stream has a row per event)."""
    panes = panes.filter(pc.is_valid(panes.column(v.WINDOW_START_US)))
    if not panes.num_rows:
        return []

    def column(name: str, missing: float) -> np.ndarray:  # STATS_SCHEMA's: all there
        return pc.fill_null(panes.column(name).cast(pa.float64()), missing).to_numpy()

    starts = panes.column(v.WINDOW_START_US).cast(pa.int64()).to_numpy()
    events, labelled = column(v.EVENTS, 0.0), column(v.LABELLED, 0.0)
    accuracy = column(v.ACCURACY, 0.0)
    unique, at = np.unique(starts, return_inverse=True)
    n = len(unique)
    correct = np.bincount(at, np.round(accuracy * labelled), n)
    lows, highs = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lows, at, column(v.MIN_VERSION, np.inf))
    np.maximum.at(highs, at, column(v.MAX_VERSION, -np.inf))
    inf = float("inf")
    return [
        WindowAccuracy(s, int(e), int(lab), int(c), None if lo == inf else int(lo),
                       None if hi == -inf else int(hi))
        for s, e, lab, c, lo, hi in zip(
            unique.tolist(), np.bincount(at, events, n).tolist(),
            np.bincount(at, labelled, n).tolist(), correct.tolist(),
            lows.tolist(), highs.tolist(), strict=True,
        )
    ]  # fmt: skip


def _pane_figures(
    panes: pa.Table | None, accumulating: bool
) -> tuple[list[WindowAccuracy], int, int]:
    """The windows' accuracy, the late events and the panes, from the pane rows."""
    if panes is None:
        return [], 0, 0
    if accumulating:
        rows = panes.to_pylist()
        return _last_panes(rows), _late_accumulated(rows), len(rows)
    late = panes.filter(pc.equal(panes.column(v.PANE), str(Pane.LATE)))
    return _summed(panes), _events(late), panes.num_rows


def _events(panes: pa.Table | None) -> int:
    """The events the pane rows count."""
    return 0 if panes is None else int(pc.sum(panes.column(v.EVENTS)).as_py() or 0)


@dataclass(frozen=True)
class RunSummary:
    events_in: int
    predictions_out: int  # one a key and event_id
    dead_lettered: int
    windows_fired: int
    late_accepted: int
    late_dropped: int
    seconds: float
    windows: tuple[WindowAccuracy, ...] = ()
    model_versions: int = 0
    notes: tuple[str, ...] = ()  # how the run's defaults were chosen
    drift_alarms: tuple[int, ...] = ()  # event times of the pipeline's drift alarms
    feature_drift_windows: int = 0  # windows whose feature distributions moved
    # delayed labels: predictions evaluated on their label, those whose label never
    # came, and labels that found no prediction (None: labels came with their events)
    labels_joined: int | None = None
    never_labelled: int = 0
    labels_rejected: int = 0
    kafka_out: int | None = None  # prediction rows committed to a Kafka topic (if sent)
    flink: dict[str, Any] | None = None  # a standalone cluster's figures (runners.flink.rest)
    predictions_repeated: int = 0  # rows a replay after a restore wrote again
    anomalies: int | None = None  # the anomaly pipeline's alarms (is_anomaly rows)
    ratings: dict[str, float] | None = None  # recommend: prequential RMSE and MAE
    federated: dict[str, Any] | None = None  # federated: accuracy, rounds, bytes, epsilon
    memory: dict[str, Any] | None = None  # memory control's figures (memory_figures)

    @classmethod
    def from_outputs(
        cls,
        output: str,
        *,
        events_in: int,
        seconds: float,
        accumulating: bool,
        notes: tuple[str, ...] = (),
        restored: bool = False,
    ) -> RunSummary:
        """Count predictions, dead letters and panes in the files under ``output``.
        After a restore (``restored``), a prediction row counts once per ``key`` and
        ``event_id``: bundles replayed with other boundaries repeat rows in new files
        (:mod:`transforms.io.sinks`)."""
        rows = count_parquet_rows(f"{output}/predictions")
        predictions = rows
        once = restored and _has_column(f"{output}/predictions", v.EVENT_ID)
        if once:
            identity = (v.KEY, v.EVENT_ID)
            table = read_parquet_dir(f"{output}/predictions", distinct_on=identity, columns=())
            predictions = 0 if table is None else table.num_rows
        anomalies = _anomalies(f"{output}/predictions", once)
        ratings = _rating_errors(f"{output}/predictions", once)
        federated = _federated_figures(f"{output}/predictions", once)
        dead = read_jsonl_dir(f"{output}/dead_letter")
        panes = read_jsonl_table(f"{output}/windows", schema=STATS_SCHEMA)
        windows, late, fired = _pane_figures(panes, accumulating)
        versions = len(FileSystems.match([f"{output}/models/**model-*.pt"])[0].metadata_list)
        alarms = sorted(
            int(r["event_time_us"])
            for r in read_jsonl_dir(f"{output}/drift")
            if r.get("kind") == "drift"
        )
        evaluation = read_jsonl_table(f"{output}/evaluation", schema=STATS_SCHEMA)
        unlabelled = read_jsonl_dir(f"{output}/unlabelled")
        delayed = evaluation is not None or bool(unlabelled)
        if delayed:  # accuracy from the predictions joined to their late labels
            joined = [] if evaluation is None else _summed(evaluation)
            windows = with_evaluation(windows, joined)
        return cls(
            events_in=events_in,
            predictions_out=predictions,
            predictions_repeated=rows - predictions,
            anomalies=anomalies,
            ratings=ratings,
            federated=federated,
            dead_lettered=sum(int(r.get("rows", 1)) for r in dead),
            windows_fired=fired,
            late_accepted=late,
            late_dropped=sum(
                int(r.get("rows", 1)) for r in dead if r.get("stage") == Stage.WINDOWING
            ),
            seconds=seconds,
            windows=tuple(windows),
            model_versions=versions,
            notes=notes,
            drift_alarms=tuple(alarms),
            feature_drift_windows=sum(
                1 for r in read_jsonl_dir(f"{output}/feature_drift") if r["drifted_features"]
            ),
            labels_joined=_events(evaluation) if delayed else None,
            never_labelled=sum(int(r["rows"]) for r in unlabelled),
            labels_rejected=sum(
                int(r.get("rows", 1)) for r in read_jsonl_dir(f"{output}/label_dead_letter")
            ),
        )

    @property
    def events_per_second(self) -> float:
        return self.events_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def balanced(self) -> bool:
        """Every input event is either a prediction or a dead letter."""
        return self.events_in == self.predictions_out + self.dead_lettered

    def lines(self) -> list[str]:
        check = "ok" if self.balanced else "MISMATCH"
        return [
            f"events in        {self.events_in:>12,}",
            f"predictions out  {self.predictions_out:>12,}",
            *(
                [f"  repeated rows  {self.predictions_repeated:>12,}  (replayed after a restore)"]
                if self.predictions_repeated
                else []
            ),
            *(
                []
                if self.anomalies is None
                else [f"anomalies        {self.anomalies:>12,}  (is_anomaly: online alarms)"]
            ),
            f"dead-lettered    {self.dead_lettered:>12,}  (late dropped: {self.late_dropped:,})",
            f"in = out + rejected: {check}",
            *self._window_figures(),
            f"wall time        {self.seconds:>12.2f} s",
            f"events/s         {self.events_per_second:>12,.0f}",
            *self._learning_figures(),
            *self.label_lines(),
            *(
                []
                if self.kafka_out is None
                else [f"to Kafka         {self.kafka_out:>12,}  (predictions, committed)"]
            ),
            *([] if self.memory is None else memory_lines(self.memory)),
            *([] if self.flink is None else JobFigures(**self.flink).lines()),
            *(f"note: {n}" for n in self.notes),
            *self.window_lines(),
        ]

    def _window_figures(self) -> list[str]:
        if self.anomalies is not None or self.ratings is not None or self.federated is not None:
            return []
        return [
            f"late accepted    {self.late_accepted:>12,}",
            f"windows fired    {self.windows_fired:>12,}  (panes)",
        ]

    def _learning_figures(self) -> list[str]:
        if self.federated is not None:
            f = self.federated
            lines = [
                f"prequential acc  {f['accuracy']:>12.4f}  (over {f['events']:,} events, each "
                "predicted by its device's model before the device learnt it)",
                f"federated rounds {f['rounds']:>12,}  (global versions {f['versions']:,})",
            ]
            if "bytes_sent" in f:
                privacy = (
                    "no differential privacy (no noise)"
                    if f["epsilon"] is None
                    else f"epsilon {f['epsilon']:.2f} at delta 1e-5"
                )
                lines.append(
                    f"updates sent     {f['bytes_sent']:>12,} bytes  (deltas only; {privacy})"
                )
            return lines
        if self.ratings is not None:
            r = self.ratings
            return [
                f"prequential RMSE {r['rmse']:>11.4f}  (MAE {r['mae']:.4f}, over "
                f"{r['rated']:,} rated events, each predicted before it was learnt)"
            ]
        if self.anomalies is not None:  # nor models published, nor prequential drift
            return []
        return [
            f"model versions   {self.model_versions:>12,}  (published by online learning)",
            f"drift alarms     {len(self.drift_alarms):>12,}  (every key's prequential error)",
            f"feature drift    {self.feature_drift_windows:>12,}  (windows unlike the one before)",
        ]

    def label_lines(self) -> list[str]:
        if self.labels_joined is None:
            return []
        balanced = self.predictions_out == self.labels_joined + self.never_labelled
        check = "ok" if balanced else "MISMATCH"
        return [
            f"labels joined    {self.labels_joined:>12,}  (predictions evaluated on late labels)",
            f"never labelled   {self.never_labelled:>12,}  (predictions = joined + never: {check})",
            f"labels rejected  {self.labels_rejected:>12,}  (late, for no event, or unreadable)",
        ]

    def window_lines(self, most: int = SHOWN_WINDOWS) -> list[str]:
        """A line per window: the first and last ``most / 2`` when there are more (a
        sparse stream has thousands; all are in ``metrics.json`` and ``windows/``)."""
        if not any(w.labelled for w in self.windows):
            return []
        lines = ["prequential accuracy per event-time window (UTC start, events, versions):"]
        shown = _start_format([w.start_us for w in self.windows])
        windows: list[WindowAccuracy | None] = list(self.windows)
        if len(windows) > most:
            windows = [*windows[: most // 2], None, *windows[-(most // 2) :]]
        for w in windows:
            if w is None:
                more = len(self.windows) - 2 * (most // 2)
                lines.append(f"  ... {more:,} windows more (all in metrics.json and windows/)")
                continue
            start = utc(w.start_us).strftime(shown)
            acc = "   -  " if w.accuracy is None else f"{w.accuracy:6.3f}"
            versions = "" if w.min_version is None else f"v{w.min_version}"
            if w.max_version is not None and w.max_version != w.min_version:
                versions += f"-v{w.max_version}"
            lines.append(f"  {start}  {acc}  {w.events:>7,}  {versions}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Every field, each window as a dict with its accuracy, and the derived
        figures (built field by field: ``asdict`` copies deeply, slow for thousands
        of windows)."""
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        names = [f.name for f in fields(WindowAccuracy)]
        data["windows"] = [
            {**{n: getattr(w, n) for n in names}, "accuracy": w.accuracy} for w in self.windows
        ]
        data["notes"], data["drift_alarms"] = list(self.notes), list(self.drift_alarms)
        data["events_per_second"] = self.events_per_second
        data["balanced"] = self.balanced
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _start_format(starts_us: list[int]) -> str:
    """How to print window starts: their date when they span a day or more (the
    time of day too, unless every one starts at midnight)."""
    if not starts_us or max(starts_us) - min(starts_us) < 86_400_000_000:
        return "%H:%M:%S"
    if all(t % 86_400_000_000 == 0 for t in starts_us):
        return "%Y-%m-%d"
    return "%Y-%m-%d %H:%M:%S"


def with_evaluation(
    scored: list[WindowAccuracy], evaluated: list[WindowAccuracy]
) -> list[WindowAccuracy]:
    """Per window: the events and versions that scored them (from the scorer's
    statistics), the labelled and correct ones from the evaluation on late labels."""
    labels = {w.start_us: w for w in evaluated}
    starts = sorted({w.start_us for w in scored} | set(labels))
    by_start = {w.start_us: w for w in scored}
    out = []
    for start in starts:
        s, e = by_start.get(start), labels.get(start)
        out.append(
            WindowAccuracy(
                start,
                s.events if s else 0,
                e.labelled if e else 0,
                e.correct if e else 0,
                s.min_version if s else None,
                s.max_version if s else None,
            )
        )
    return out


def _late_accumulated(panes: list[dict[str, Any]]) -> int:
    """Events that arrived after their window's on-time pane, from accumulating pane
    rows (each pane counts the window's events so far)."""
    before_late: dict[tuple[Any, ...], int] = {}
    final: dict[tuple[Any, ...], int] = {}
    for p in panes:
        w = (p[v.KEY], p[v.WINDOW_START_US], p[v.WINDOW_END_US])
        final[w] = max(final.get(w, 0), p[v.EVENTS])
        if p[v.PANE] != Pane.LATE:
            before_late[w] = max(before_late.get(w, 0), p[v.EVENTS])
    return sum(final[w] - before_late.get(w, 0) for w in final)


def _has_column(directory: str, name: str) -> bool:
    """Whether the Parquet part files under ``directory`` have column ``name`` (the
    first one's schema: a writer writes one schema)."""
    matches = FileSystems.match([FileSystems.join(directory, "part-*.parquet")])[0]
    if not matches.metadata_list:
        return False
    with FileSystems.open(matches.metadata_list[0].path) as f:
        return name in pq.ParquetFile(f).schema_arrow.names


def _anomalies(directory: str, once: bool) -> int | None:
    """The rows with ``is_anomaly`` set (with ``once``, one a key and event_id), or
    None when the rows have no such column (not the anomaly pipeline's)."""
    if not _has_column(directory, v.IS_ANOMALY):
        return None
    identity = (v.KEY, v.EVENT_ID) if once else ()
    table = read_parquet_dir(directory, distinct_on=identity, columns=(v.IS_ANOMALY,))
    return 0 if table is None else int(pc.sum(table.column(v.IS_ANOMALY)).as_py() or 0)


def _rating_errors(directory: str, once: bool) -> dict[str, float] | None:
    """Prequential RMSE and MAE of the rows with a ``rating`` (the recommend
    pipeline's), over the rated ones; None when the rows have no rating column."""
    if not _has_column(directory, RATING):
        return None
    identity = (v.KEY, v.EVENT_ID) if once else ()
    table = read_parquet_dir(directory, distinct_on=identity, columns=(RATING, v.PREDICTION))
    if table is None:
        return {"rated": 0, "rmse": math.nan, "mae": math.nan}
    rating = table.column(RATING).to_numpy(zero_copy_only=False)
    prediction = table.column(v.PREDICTION).to_numpy(zero_copy_only=False).astype(np.float64)
    rated = ~np.isnan(rating)
    error = prediction[rated] - rating[rated]
    if not len(error):
        return {"rated": 0, "rmse": math.nan, "mae": math.nan}
    return {"rated": int(rated.sum()), "rmse": float(np.sqrt(np.mean(error**2))),
            "mae": float(np.mean(np.abs(error)))}  # fmt: skip


def _federated_figures(directory: str, once: bool) -> dict[str, Any] | None:
    """The federated pipeline's prequential accuracy, rounds and global versions, from
    its prediction rows (they have a ``round`` column); None for other pipelines."""
    if not _has_column(directory, FEDERATED_ROUND):
        return None
    identity = (v.KEY, v.EVENT_ID) if once else ()
    columns = (v.LABEL, v.PREDICTION, v.MODEL_VERSION, FEDERATED_ROUND)
    table = read_parquet_dir(directory, distinct_on=identity, columns=columns)
    if table is None or not table.num_rows:
        return {"events": 0, "accuracy": math.nan, "rounds": 0, "versions": 0}
    label = table.column(v.LABEL).to_numpy(zero_copy_only=False)
    pred = table.column(v.PREDICTION).to_numpy(zero_copy_only=False)
    return {"events": int(len(label)), "accuracy": float(np.mean(label == pred)),
            "rounds": int(len(np.unique(table.column(FEDERATED_ROUND).to_numpy()))),
            "versions": int(pc.max(table.column(v.MODEL_VERSION)).as_py())}  # fmt: skip


def federated_metrics(result: PipelineResult) -> dict[str, Any]:
    """Update bytes sent and the privacy spent (None: no noise), from the run's metrics."""
    totals, largest = _metrics(result)
    epsilon_milli = largest.get(Metric.FEDERATED_EPSILON_MILLI)
    return {"bytes_sent": totals.get(Metric.FEDERATED_BYTES, 0),
            "epsilon": None if epsilon_milli is None else epsilon_milli / 1000}  # fmt: skip


def predictions_by_event(output: str, *, once: bool = False) -> list[tuple[int, int, int]]:
    """``(event_id, prediction, model_version)`` of every row a run wrote under
    ``<output>/predictions``, sorted: what two runs (runners) are compared on. With
    ``once`` (a run that restored), a row repeated whole (a bundle replayed after the
    restore) counts once; a repeat that differs stays, so that a comparison sees it."""
    distinct = (v.KEY, v.EVENT_ID, v.PREDICTION, v.MODEL_VERSION) if once else ()
    table = read_parquet_dir(FileSystems.join(output, "predictions"), distinct_on=distinct)
    if table is None:
        return []
    columns = [table.column(c).to_pylist() for c in (v.EVENT_ID, v.PREDICTION, v.MODEL_VERSION)]
    return sorted(zip(*columns, strict=True))
