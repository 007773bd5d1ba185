"""The run report: ``metrics.json`` and ``report.html`` with PNG plots, in the output.

Every number in ``metrics.json`` is counted from the sinks (see
:mod:`pipelines.summary`), so it matches the files next to it. Plots:

- ``throughput.png``: events read and scored over wall-clock time, and events/s;
- ``accuracy.png``: prequential accuracy per event-time window;
- ``timeline.png``: the newest model version scoring each window, and drift alarms;
- ``anomaly_scores.png`` (NAB input): each series' anomaly score (probability of the
  anomalous class), flagged points, and the labelled anomaly windows.
"""

from __future__ import annotations

import collections
import datetime as dt
import html
import json
import os
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from model import vocabulary as v  # noqa: E402
from model.streams.csv_parse import anomaly_windows  # noqa: E402
from pipelines.summary import RunSummary, WindowAccuracy  # noqa: E402
from transforms.io.sinks import read_jsonl_dir, read_parquet_dir  # noqa: E402


def _utc(us: float) -> float:
    """A matplotlib date number for an event time in microseconds (UTC)."""
    return float(mdates.date2num(dt.datetime.fromtimestamp(us / 1e6, tz=dt.UTC)))


def _utc_all(us: list[int]) -> np.ndarray:
    """:func:`_utc` for many times at once (a sparse stream has a window per event)."""
    return np.asarray(mdates.date2num(np.asarray(us, dtype=np.int64).astype("datetime64[us]")))


_MARKED = 200  # plots of more points than this draw lines only (markers cost per point)
_POINTS = 500  # the accuracy plot draws at most this many points (runs of windows)


def _json_lines(data: dict[str, Any]) -> str:
    """``data`` as JSON, a line per key: readable, and fast for thousands of windows
    (``json.dump`` with an indent falls back to its pure-Python encoder)."""
    items = [f"  {json.dumps(k)}: {json.dumps(data[k], sort_keys=True)}" for k in sorted(data)]
    return "{\n" + ",\n".join(items) + "\n}\n"


def _date_axis(ax: Any) -> None:
    """Event-time ticks as the span needs them: years for decades, seconds for minutes."""
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))


def _subplots(rows: int = 1, cols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure outside pyplot's registry (nothing to close, nothing kept)."""
    fig = Figure(figsize=kwargs.pop("figsize"))
    return fig, fig.subplots(rows, cols, **kwargs)


def _save(fig: Any, path: str) -> str:
    # fixed margins (tight_layout measured every label: a third of the report's time)
    inches = fig.get_size_inches()
    fig.subplots_adjust(
        left=0.9 / inches[0], right=1 - 0.2 / inches[0], bottom=0.75 / inches[1],
        top=1 - 0.3 / inches[1], hspace=0.45,
    )  # fmt: skip
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})  # zlib's fastest
    return os.path.basename(path)


def _throughput(samples: list[dict[str, Any]], path: str) -> str | None:
    if len(samples) < 2:
        return None
    t = np.array([s["t_s"] for s in samples])
    events = np.array([s["events_in"] for s in samples])
    scored = np.array([s["scored"] for s in samples])
    rate = np.diff(events) / np.maximum(np.diff(t), 1e-9)
    # a run shorter than two progress ticks has one rate: said in the title, not drawn
    fig, axes = _subplots(1 + (len(rate) > 1), 1, figsize=(8, 2.5 + 2.5 * (len(rate) > 1)),
                             sharex=True, squeeze=False)  # fmt: skip
    a = axes[0, 0]
    a.plot(t, events, label="events read")
    a.plot(t, scored, label="events scored")
    a.set_ylabel("events")
    a.legend()
    if len(rate) > 1:
        b = axes[1, 0]
        b.step(t[1:], rate, where="post")
        b.set_ylabel("events/s")
    else:
        a.set_title(f"{rate[0]:,.0f} events/s", fontsize=9)
    axes[-1, 0].set_xlabel("wall-clock seconds")
    return _save(fig, path)


def _accuracy(summary: RunSummary, path: str) -> str | None:
    starts, accuracy, run = accuracy_runs(summary.windows)
    if not len(starts):
        return None
    fig, ax = _subplots(figsize=(8, 3.5))
    ax.plot(_utc_all(starts.tolist()), accuracy, marker="o" if len(starts) <= _MARKED else None)
    _date_axis(ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("prequential accuracy")
    runs = "" if run == 1 else f", runs of {run}+ windows"
    ax.set_xlabel(f"event time (window start, UTC{runs})")
    return _save(fig, path)


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
    fig, ax = _subplots(figsize=(8, 3.5))
    starts, versions = zip(*points, strict=True)
    ax.step(_utc_all(list(starts)), versions, where="post", label="model version")
    for i, a in enumerate(alarms):
        ax.axvline(_utc(a), color="red", linestyle="--", label="drift alarm" if i == 0 else None)
    ax.set_ylabel("newest model version")
    ax.set_xlabel("event time (UTC)")
    _date_axis(ax)
    ax.legend()
    return _save(fig, path)


def _anomaly_scores(output: str, inputs: tuple[str, ...], path: str) -> str | None:
    table = read_parquet_dir(os.path.join(output, "predictions"))
    if table is None or not inputs:
        return None
    series = sorted(set(table.column(v.KEY).to_pylist()))[:4]
    fig, axes = _subplots(len(series), 1, figsize=(9, 2.6 * len(series)), squeeze=False)
    by_key = {os.path.basename(p): p for p in inputs}
    for ax, key in zip(axes[:, 0], series, strict=True):
        rows = table.filter(pc.equal(table.column(v.KEY), key))
        stamps = rows.column(v.EVENT_TIME).to_numpy().astype("datetime64[us]")
        order = np.argsort(stamps)
        times = mdates.date2num(stamps[order])
        pred = rows.column(v.PREDICTION).to_numpy()[order]
        conf = rows.column(v.SCORE).to_numpy()[order]
        anomaly = np.where(pred == 1, conf, 1 - conf)
        ax.plot(times, anomaly, linewidth=0.7, label="anomaly score")
        flagged = pred == 1
        ax.scatter(times[flagged], anomaly[flagged], color="red", s=6, label="flagged")
        path_in = by_key.get(key.split("/")[-1])
        for i, (a, b) in enumerate(anomaly_windows(path_in) or [] if path_in else []):
            ax.axvspan(
                _utc(a),
                _utc(b),
                color="orange",
                alpha=0.3,
                label="labelled window" if i == 0 else None,
            )
        _date_axis(ax)
        ax.set_title(key, fontsize=9)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def write(
    output: str,
    summary: RunSummary,
    *,
    samples: list[dict[str, Any]],
    drift_alarms: list[int],
    source: str,
    inputs: tuple[str, ...] = (),
) -> dict[str, str]:
    """Write metrics.json, the PNGs and report.html; returns their paths."""
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
        "Throughput": _throughput(samples, os.path.join(output, "throughput.png")),
        "Prequential accuracy per window": _accuracy(summary, os.path.join(output, "accuracy.png")),
        "Model versions and drift alarms": _timeline(
            summary, drift_alarms, os.path.join(output, "timeline.png")
        ),
    }
    if source == "nab":
        plots["Anomaly scores (NAB)"] = _anomaly_scores(
            output, inputs, os.path.join(output, "anomaly_scores.png")
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
