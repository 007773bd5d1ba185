"""The anomaly pipeline end to end: NAB series in, scored rows out."""

from __future__ import annotations

import os

import pytest

from pipelines import main
from pipelines.cli import config_from_args, parse_args
from runners.flink import FlinkSettings, FlinkUnavailable
from transforms.io import read_parquet_dir

NAB = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "data", "nab")
JUMPS = os.path.join(NAB, "artificialWithAnomaly", "art_daily_jumpsup.csv")


def _run(runner: str, out, **kwargs) -> list[dict]:
    argv = ["--pipeline", "anomaly", "--source", "nab", "--input", JUMPS, "--output", str(out)]
    summary = main.run(config_from_args(parse_args(argv)), runner, show_progress=False, **kwargs)
    assert summary.balanced and summary.events_in == 4032
    shown = "\n".join(summary.lines())
    assert f"anomalies        {summary.anomalies:>12,}" in shown
    assert "windows fired" not in shown and "model versions" not in shown
    table = read_parquet_dir(os.path.join(out, "predictions"))
    return sorted(table.to_pylist(), key=lambda r: r["event_id"])


def test_every_event_gets_a_score_and_the_labelled_jump_an_alarm(tmp_path):
    rows = _run("DirectRunner", tmp_path / "out")
    assert len(rows) == 4032 and all(0.0 <= r["anomaly_score"] <= 1.0 for r in rows)
    labelled = [r for r in rows if r["label"] == 1]  # NAB's window, for evaluation only
    assert labelled and any(r["is_anomaly"] for r in labelled)
    assert (tmp_path / "out" / "anomaly_scores.svg").is_file()


@pytest.mark.flink
@pytest.mark.slow
def test_the_anomaly_pipeline_on_flink_gives_the_direct_runners_rows(tmp_path):
    try:
        from runners import flink

        flink.job_server()
    except FlinkUnavailable as err:
        pytest.skip(str(err))
    direct = _run("DirectRunner", tmp_path / "direct")
    on_flink = _run("FlinkRunner", tmp_path / "flink", flink=FlinkSettings())
    assert [r["is_anomaly"] for r in on_flink] == [r["is_anomaly"] for r in direct]
    assert [r["anomaly_score"] for r in on_flink] == pytest.approx(
        [r["anomaly_score"] for r in direct], abs=1e-9
    )
