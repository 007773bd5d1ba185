"""Streams as users bring them: a file of daily rows, run with the default options."""

from __future__ import annotations

import datetime as dt
import json
import os

import numpy as np
import pytest

from pipelines import main
from transforms.io import read_jsonl_dir


def write_daily_csv(path: str, rows: int, *, seed: int = 0, labels: list[str] | None = None) -> str:
    """``rows`` days from 1961-01-01 (before 1970, as real records are): three
    features on different scales and a label that depends on them."""
    rng = np.random.default_rng(seed)
    day0 = dt.date(1961, 1, 1)
    lines = ["timestamp,temp,pressure,wind,y"]
    for i in range(rows):
        temp, pressure, wind = rng.normal(15, 8), rng.normal(1013, 9), rng.exponential(4)
        y = labels[i] if labels is not None else str(int(pressure < 1012 + rng.normal(0, 3)))
        day = (day0 + dt.timedelta(days=i)).isoformat()
        lines.append(f"{day},{temp:.2f},{pressure:.2f},{wind:.2f},{y}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main.main([*argv, "--quiet", "--json"])
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1]) if code in (0, 1) else {}
    return code, summary, out


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_a_daily_stream_gets_windows_of_its_own_time_scale(tmp_path, capsys, streaming):
    data = write_daily_csv(str(tmp_path / "daily.csv"), 400)
    out = str(tmp_path / "out")
    argv = ["--source", "csv", "--input", data, "--label-column", "y", "--output", out]
    code, summary, text = run_json([*argv, streaming], capsys)
    assert code == 0 and summary["balanced"] and summary["predictions_out"] == 400
    # the window the data's daily spacing asks for, said in the summary
    assert "window size: windows of 28 days (the data: an event every 1 day" in text
    windows = read_jsonl_dir(os.path.join(out, "windows"))
    assert {w["window_end_us"] - w["window_start_us"] for w in windows} == {28 * 86_400 * 10**6}
    assert 400 / 28 <= len(summary["windows"]) <= 400 / 28 + 2
    # window starts print their dates (1960-12-?? : windows align to the epoch)
    assert "  1961-01-" in text or "  1960-12-" in text
    # the stream is learned: the later windows are mostly right
    late = [w for w in summary["windows"][len(summary["windows"]) // 2 :] if w["labelled"]]
    assert sum(w["correct"] for w in late) / sum(w["labelled"] for w in late) > 0.7
