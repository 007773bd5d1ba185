"""main.py end to end on the embedded default."""

from __future__ import annotations

import json
import os
from xml.etree import ElementTree

import pyarrow as pa
import pytest

from pipelines import main
from transforms.io import read_jsonl_dir, read_parquet_dir

SVG = "{http://www.w3.org/2000/svg}"


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as exc:
        main.main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for option in [
        "--runner",
        "--pipeline",
        "--source",
        "--input",
        "--output",
        "--label-column",
        "--window",
        "--window-size",
        "--allowed-lateness",
        "--early-count",
        "--early-after",
        "--late-count",
        "--accumulating",
        "--streaming",
    ]:
        assert option in text


def test_bad_option_value_is_a_usage_error(capsys, tmp_path):
    assert main.main(["--window-size", "-3", "--output", str(tmp_path)]) == main.EXIT_USAGE
    assert "window size must be > 0" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "decoupled"])
def test_default_streaming_run_writes_all_outputs(tmp_path, capsys, mode):
    out = str(tmp_path / "out")
    args = ["--runner", "DirectRunner", "--output", out, "--events", "6000", "--json"]
    assert main.main(args if mode is None else [*args, "--mode", mode]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    predictions = read_parquet_dir(os.path.join(out, "predictions"))
    assert predictions is not None
    for column in [
        "key",
        "event_time",
        "event_id",
        "label",
        "prediction",
        "score",
        "model_version",
    ]:
        assert column in predictions.column_names
    assert predictions.schema.field("event_time").type == pa.timestamp("us", tz="UTC")
    versions = set(predictions.column("model_version").to_pylist())
    assert 0 in versions and len(versions) > 3  # new versions reached the scorer in the run
    saved = os.listdir(os.path.join(out, "models"))
    assert len(saved) == summary["model_versions"] >= max(versions)
    ids = predictions.column("event_id").to_pylist()
    assert len(ids) == len(set(ids))  # no event scored twice
    dead = read_jsonl_dir(os.path.join(out, "dead_letter"))
    assert summary["events_in"] == 6000
    assert summary["predictions_out"] == len(ids)
    assert summary["dead_lettered"] == sum(d["rows"] for d in dead) > 0
    assert summary["balanced"]
    panes = read_jsonl_dir(os.path.join(out, "windows"))
    # decoupled: the scorer's panes fire early, on time and late; coupled (the default):
    # a window's events are scored when the watermark passes it, late ones when they come
    kinds = {"EARLY", "ON_TIME", "LATE"} if mode == "decoupled" else {"ON_TIME", "LATE"}
    assert {p["pane"] for p in panes} == kinds
    assert summary["windows_fired"] == len(panes)
    jsonl = read_jsonl_dir(os.path.join(out, "predictions"))
    assert len(jsonl) == len(ids) and jsonl[0]["event_time"].endswith("Z")
    # Prequential accuracy: learned from the stream. Decoupled: chance in the first window
    # (scored by the untrained model); coupled: each event scored by a model that has
    # learned every earlier event, the first window's too.
    windows = summary["windows"]
    assert max(w["accuracy"] for w in windows) > 0.85
    if mode == "decoupled":
        assert windows[0]["accuracy"] < 0.7
    else:
        assert windows[0]["accuracy"] > 0.75
    # The report: metrics.json agrees with the sinks, plots are SVG drawings of the run.
    metrics = json.loads(open(os.path.join(out, "metrics.json")).read())
    assert metrics["predictions_out"] == len(ids) and metrics["events_in"] == 6000
    assert metrics["dead_letter_reasons"] == {"late": summary["dead_lettered"]}
    assert metrics["model_versions"] == len(saved)
    assert metrics["progress"] and metrics["progress"][-1]["events_in"] == 6000
    page = open(os.path.join(out, "report.html")).read()
    for plot, legend in (("throughput", "events scored"), ("accuracy", None),
                         ("timeline", "model version")):  # fmt: skip
        assert f"src='{plot}.svg'" in page
        drawing = ElementTree.parse(os.path.join(out, f"{plot}.svg")).getroot()
        assert drawing.tag.endswith("svg") and drawing.find(f".//{SVG}polyline") is not None
        assert legend is None or legend in "".join(drawing.itertext())


@pytest.mark.slow
def test_score_pipeline_uses_one_warm_started_model(tmp_path):
    out = str(tmp_path / "out")
    assert main.main(["--pipeline", "score", "--output", out, "--events", "4000"]) == 0
    predictions = read_parquet_dir(os.path.join(out, "predictions"))
    assert predictions is not None
    assert set(predictions.column("model_version").to_pylist()) == {0}
    # The warm-started model is far better than chance before the first drift.
    correct = pa.compute.equal(predictions.column("prediction"), predictions.column("label"))
    assert pa.compute.mean(correct.cast(pa.int8())).as_py() > 0.8


@pytest.mark.slow
def test_bounded_run_scores_every_event(tmp_path):
    out = str(tmp_path / "out")
    args = ["--pipeline", "score", "--output", out, "--events", "3000", "--no-streaming"]
    assert main.main([*args, "--window", "sliding", "--window-period", "5"]) == 0
    predictions = read_parquet_dir(os.path.join(out, "predictions"))
    assert predictions is not None and predictions.num_rows == 3000
    assert read_jsonl_dir(os.path.join(out, "dead_letter")) == []


@pytest.mark.slow
def test_bounded_coupled_classify_run(tmp_path):
    out = str(tmp_path / "out")
    args = ["--output", out, "--events", "3000", "--no-streaming", "--mode", "coupled"]
    assert main.main([*args, "--per-key", "--json"]) == 0
    predictions = read_parquet_dir(os.path.join(out, "predictions"))
    assert predictions is not None and predictions.num_rows == 3000
    assert len(os.listdir(os.path.join(out, "models"))) == 8  # one folder per key


def test_classify_needs_fixed_windows(capsys, tmp_path):
    assert (
        main.main(["--window", "sliding", "--window-period", "5", "--output", str(tmp_path)]) == 2
    )
    assert "needs fixed windows" in capsys.readouterr().err


@pytest.mark.slow
def test_nab_report_plots_scores_flags_and_labelled_windows(tmp_path):
    nab = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "data", "nab")
    path = os.path.join(nab, "artificialWithAnomaly", "art_daily_jumpsup.csv")
    out = str(tmp_path / "out")
    args = ["--pipeline", "score", "--source", "nab", "--input", path, "--window-size", "86400"]
    assert main.main([*args, "--no-streaming", "--output", out, "--quiet"]) == 0
    drawing = ElementTree.parse(os.path.join(out, "anomaly_scores.svg")).getroot()
    text = "".join(drawing.itertext())
    assert "anomaly score" in text and "labelled window" in text and "flagged" in text
    assert "anomaly_scores.svg" in open(os.path.join(out, "report.html")).read()


@pytest.mark.parametrize(
    ("argv", "applied"),
    [
        ([], [True]),
        (["--no-streaming"], [False]),
        (["--no-beam-patches"], []),
        (["--runner", "PrismRunner"], []),  # only the local runners are patched
    ],
)
def test_the_command_line_applies_beam_patches_for_its_mode(argv, applied, monkeypatch, tmp_path):
    from runners import patches

    calls: list[bool | None] = []
    monkeypatch.setattr(patches, "apply", lambda streaming=None: calls.append(streaming) or [])
    monkeypatch.setattr(main, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("ran")))
    assert main.main([*argv, "--output", str(tmp_path), "--quiet"]) == main.EXIT_RUNTIME
    assert calls == applied


def test_patches_for_another_beam_release_are_a_warning_and_the_run_goes_on(
    monkeypatch, tmp_path, capsys
):
    from runners import patches

    def refuse(streaming=None):
        raise patches.BeamVersionMismatch("option_views", "2.77.0", "2.78.0")

    ran = []
    monkeypatch.setattr(patches, "apply", refuse)
    monkeypatch.setattr(main, "run", lambda *a, **k: ran.append(1) or 1 / 0)
    assert main.main(["--output", str(tmp_path), "--quiet"]) == main.EXIT_RUNTIME
    assert ran == [1]  # ran unpatched
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "2.77.0" in warnings[0] and "2.78.0" in warnings[0]
