"""--pipeline federated end to end: streaming and bounded give the same predictions,
counts balance, the summary reports rounds, bytes and epsilon."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from model.streams.devices import DevicesConfig, device_stream
from pipelines import main
from pipelines.cli import UsageError, config_from_args, parse_args
from pipelines.summary import predictions_by_event


def _run(tmp_path, name: str, *argv: str):
    out = str(tmp_path / name)
    cfg = config_from_args(parse_args(["--pipeline", "federated", "--output", out, *argv]))
    return main.run(cfg, show_progress=False), out


def test_streaming_and_bounded_runs_agree(tmp_path):
    args = ("--events", "12000", "--window-size", "1000", "--compression", "int8")
    streamed, a = _run(tmp_path, "a", *args)
    bounded, b = _run(tmp_path, "b", *args, "--no-streaming")
    assert streamed.balanced and bounded.balanced and streamed.predictions_out == 12000
    assert predictions_by_event(a) == predictions_by_event(b)
    assert streamed.federated is not None and streamed.federated["rounds"] == 12
    assert streamed.federated["bytes_sent"] > 0
    assert any(line.startswith("federated rounds") for line in streamed.lines())


def test_privacy_is_accounted_and_reported(tmp_path):
    summary, _ = _run(tmp_path, "dp", "--events", "8000", "--window-size", "1000",
                      "--dp-clip", "1", "--dp-noise", "1.2", "--no-streaming")  # fmt: skip
    assert summary.federated is not None and 0 < summary.federated["epsilon"] < 100
    assert "epsilon" in "".join(summary.lines())


def test_secure_aggregation_and_a_bytes_budget_from_the_command_line(tmp_path):
    base = ("--events", "6000", "--window-size", "1000", "--no-streaming")
    plain, a = _run(tmp_path, "plain", *base)
    secure, b = _run(tmp_path, "secure", *base, "--secure")
    assert predictions_by_event(a) == predictions_by_event(b)  # the same model, masked
    budget, _ = _run(tmp_path, "budget", *base, "--max-update-bytes", "24")
    assert budget.federated is not None and plain.federated is not None
    assert budget.federated["bytes_sent"] < plain.federated["bytes_sent"] / 8


def test_devices_from_a_csv(tmp_path):
    s = device_stream(DevicesConfig(devices=6, events=3000, features=4, seed=1))
    table = pa.table({"timestamp": s["timestamp"], "key": s["key"],
                      **{f"f{j}": s["x"][:, j] for j in range(4)}, "label": s["y"]})  # fmt: skip
    path = tmp_path / "devices.csv"
    pa_csv.write_csv(table, path)
    summary, out = _run(tmp_path, "csv", "--source", "csv", "--input", str(path),
                        "--label-column", "label", "--window-size", "500",
                        "--no-streaming")  # fmt: skip
    assert summary.predictions_out == 3000 and summary.balanced
    assert summary.federated is not None and summary.federated["rounds"] == 6
    assert os.path.isdir(os.path.join(out, "predictions"))


def test_the_federated_pipeline_needs_labels(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,key,f0\n1700000000,a,1.0\n")
    with pytest.raises(UsageError, match="needs labels"):
        config_from_args(parse_args(["--pipeline", "federated", "--source", "csv", "--input",
                                     str(path), "--window-size", "60",
                                     "--output", str(tmp_path / "o")]))  # fmt: skip


@pytest.mark.flink
@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["federated", "recommend"])
def test_the_same_answers_on_flink(tmp_path, pipeline):
    from runners.flink import FlinkSettings, FlinkUnavailable

    try:
        from runners import flink

        flink.job_server()
    except FlinkUnavailable as err:
        pytest.skip(str(err))
    argv = ["--pipeline", pipeline, "--events", "6000", "--window-size", "1000"]
    outs = {}
    for runner in ("DirectRunner", "FlinkRunner"):
        out = str(tmp_path / runner)
        cfg = config_from_args(parse_args([*argv, "--output", out]))
        extra = {"flink": FlinkSettings()} if runner == "FlinkRunner" else {}
        summary = main.run(cfg, runner, show_progress=False, **extra)
        assert summary.balanced and summary.predictions_out == 6000
        outs[runner] = predictions_by_event(out) if pipeline == "federated" else _ratings(out)
    assert outs["FlinkRunner"] == outs["DirectRunner"]


def _ratings(out: str) -> list[tuple[int, float]]:
    from transforms.io import read_parquet_dir

    table = read_parquet_dir(os.path.join(out, "predictions"))
    assert table is not None
    return sorted(zip(table.column("event_id").to_pylist(),
                      [round(p, 5) for p in table.column("prediction").to_pylist()],
                      strict=True))  # fmt: skip
