"""The run report: ``metrics.json`` and ``report.html`` with SVG plots, in the output.

Every number in ``metrics.json`` is counted from the sinks (see
:mod:`pipelines.summary`), so it matches the files next to it. Plots:

- ``throughput.svg``: events read and scored over wall-clock time, and events/s;
- ``accuracy.svg``: prequential accuracy per event-time window;
- ``timeline.svg``: the newest model version scoring each window, and drift alarms;
- ``anomaly_scores.svg`` (NAB input): each series' anomaly score (probability of the
  anomalous class), flagged points, and the labelled anomaly windows.
"""

from __future__ import annotations

import collections
import html
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from model import vocabulary as v
from model.streams.csv_parse import anomaly_windows
from pipelines import svg
from pipelines.summary import RunSummary, WindowAccuracy
from transforms.io.sinks import read_jsonl_dir, read_parquet_dir

_MARKED = 200  # plots of more points than this draw lines only (markers cost per point)
_POINTS = 500  # the accuracy plot draws at most this many points (runs of windows)


def _json_lines(data: dict[str, Any]) -> str:
    """``data`` as JSON, a line per key: readable, and fast for thousands of windows
    (``json.dump`` with an indent falls back to its pure-Python encoder)."""
    items = [f"  {json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}" for k in sorted(data)]
    return "{\n" + ",\n".join(items) + "\n}\n"


def _throughput(samples: list[dict[str, Any]], path: str) -> str | None:
    if len(samples) < 2:
        return None
    t = np.array([s["t_s"] for s in samples])
    events = np.array([s["events_in"] for s in samples])
    scored = np.array([s["scored"] for s in samples])
    rate = np.diff(events) / np.maximum(np.diff(t), 1e-9)
    counts = svg.Panel(ylabel="events")
    counts.line(t, events, label="events read")
    counts.line(t, scored, label="events scored")
    panels = [counts]
    if len(rate) > 1:
        rates = svg.Panel(ylabel="events/s")
        rates.step(t[1:], rate)
        panels.append(rates)
    else:  # a run shorter than two progress ticks has one rate: said in the title
        counts.title = f"{rate[0]:,.0f} events/s"
    panels[-1].xlabel = "wall-clock seconds"
    return svg.write(path, panels)


def _accuracy(summary: RunSummary, path: str) -> str | None:
    starts, accuracy, run = accuracy_runs(summary.windows)
    if not len(starts):
        return None
    runs = "" if run == 1 else f", runs of {run}+ windows"
    panel = svg.Panel(ylabel="prequential accuracy", ylim=(0, 1), dates=True,
                      xlabel=f"event time (window start, UTC{runs})")  # fmt: skip
    panel.line(starts, accuracy, markers=len(starts) <= _MARKED)
    return svg.write(path, [panel])


def accuracy_runs(
    windows: Sequence[WindowAccuracy], most: int = _POINTS
) -> tuple[np.ndarray, np.ndarray, int]:
    """What the accuracy plot draws: the labelled windows' starts and accuracies, or,
    for more than ``most`` of them (a sparse stream has thousands), runs of
    consecutive windows, each at the accuracy of its events together; and the
    shortest run's length.

    >>> w = [WindowAccuracy(t, 2, 2, c, None, None) for t, c in enumerate([2, 0, 1, 1])]
    >>> starts, accuracy, run = accuracy_runs(w, most=2)
    >>> starts.tolist(), accuracy.tolist(), run
    ([0, 2], [0.5, 0.5], 2)
    """
    labelled = [w for w in windows if w.labelled]
    if not labelled:
        return np.zeros(0, dtype=np.int64), np.zeros(0), 1
    starts = np.array([w.start_us for w in labelled], dtype=np.int64)
    right = np.array([w.correct for w in labelled], dtype=np.float64)
    seen = np.array([w.labelled for w in labelled], dtype=np.float64)
    edges = np.unique(np.linspace(0, len(labelled), min(len(labelled), most) + 1).astype(int))
    firsts = edges[:-1]
    accuracy = np.add.reduceat(right, firsts) / np.add.reduceat(seen, firsts)
    return starts[firsts], accuracy, int(np.diff(edges).min())


def _timeline(summary: RunSummary, alarms: list[int], path: str) -> str | None:
    points = [(w.start_us, w.max_version) for w in summary.windows if w.max_version is not None]
    if not points:
        return None
    starts, versions = zip(*points, strict=True)
    panel = svg.Panel(ylabel="newest model version", xlabel="event time (UTC)", dates=True)
    panel.step(starts, versions, label="model version")
    for i, a in enumerate(alarms):
        panel.vline(a, label="drift alarm" if i == 0 else None)
    return svg.write(path, [panel])


def _anomaly_scores(output: str, inputs: tuple[str, ...], path: str) -> str | None:
    table = read_parquet_dir(os.path.join(output, "predictions"), distinct_on=(v.KEY, v.EVENT_ID))
    if table is None or not inputs:
        return None
    series = sorted(set(table.column(v.KEY).to_pylist()))[:4]
    by_key = {os.path.basename(p): p for p in inputs}
    panels = []
    for key in series:
        rows = table.filter(pc.equal(table.column(v.KEY), key))
        stamps = rows.column(v.EVENT_TIME).cast("int64").to_numpy()
        order = np.argsort(stamps)
        times = stamps[order]
        if v.ANOMALY_SCORE in rows.schema.names:  # the anomaly pipeline's rows
            anomaly = rows.column(v.ANOMALY_SCORE).to_numpy()[order]
            flagged = rows.column(v.IS_ANOMALY).to_numpy(zero_copy_only=False)[order]
            marks = "alarm"
        else:  # a classifier's: the probability of class 1 (an anomaly)
            pred = rows.column(v.PREDICTION).to_numpy()[order]
            conf = rows.column(v.SCORE).to_numpy()[order]
            anomaly = np.where(pred == 1, conf, 1 - conf)
            flagged, marks = pred == 1, "flagged"
        panel = svg.Panel(title=key, ylim=(0, 1), dates=True)
        panel.line(times, anomaly, label="anomaly score")
        panel.points(times[flagged], anomaly[flagged], label=marks, color="#d62728")
        path_in = by_key.get(key.split("/")[-1])
        for i, (a, b) in enumerate(anomaly_windows(path_in) or [] if path_in else []):
            panel.span(a, b, label="labelled window" if i == 0 else None)
        panels.append(panel)
    return svg.write(path, panels, share_x=False)  # series of their own times


def write(
    output: str,
    summary: RunSummary,
    *,
    samples: list[dict[str, Any]],
    drift_alarms: list[int],
    source: str,
    inputs: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write metrics.json, the SVG plots and report.html; returns their paths."""
    dead = read_jsonl_dir(os.path.join(output, "dead_letter"))
    reasons: collections.Counter[str] = collections.Counter()
    for d in dead:
        reasons[d["reason"].split(":")[0].split("(")[0].strip()] += int(d.get("rows", 1))
    metrics = summary.to_dict()
    metrics["dead_letter_reasons"] = dict(reasons)
    metrics["drift_alarms_event_time_us"] = drift_alarms
    metrics["progress"] = samples
    paths = {"metrics": os.path.join(output, "metrics.json")}
    with open(paths["metrics"], "w", encoding="utf-8") as f:
        f.write(_json_lines(metrics))
    plots = {
        "Throughput": _throughput(samples, os.path.join(output, "throughput.svg")),
        "Prequential accuracy per window": _accuracy(summary, os.path.join(output, "accuracy.svg")),
        "Model versions and drift alarms": _timeline(
            summary, drift_alarms, os.path.join(output, "timeline.svg")
        ),
    }
    if source == "nab":
        plots["Anomaly scores (NAB)"] = _anomaly_scores(
            output, inputs, os.path.join(output, "anomaly_scores.svg")
        )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in metrics.items()
        if not isinstance(v, (list, dict))
    )
    reason_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in reasons.most_common()
    )
    figures = "".join(
        f"<h2>{html.escape(title)}</h2><img src='{name}' alt='{html.escape(title)}'>"
        for title, name in plots.items()
        if name
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Run report</title></head>"
        "<body><h1>Run report</h1><table>"
        + rows
        + "</table><h2>Dead letters by reason</h2><table>"
        + (reason_rows or "<tr><td>none</td></tr>")
        + "</table>"
        + figures
        + "</body></html>"
    )
    paths["report"] = os.path.join(output, "report.html")
    with open(paths["report"], "w", encoding="utf-8") as f:
        f.write(page)
    for title, name in plots.items():
        if name:
            paths[title] = os.path.join(output, name)
    return paths
