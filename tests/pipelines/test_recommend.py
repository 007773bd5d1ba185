"""--pipeline recommend end to end: counts balance, RMSE reported, columns by option."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest

from model.streams.interactions import InteractionsConfig, interactions
from pipelines import main
from pipelines.cli import BadInputError, UsageError, config_from_args, parse_args
from transforms.io import read_parquet_dir


def _run(tmp_path, *argv: str):
    out = str(tmp_path / "out")
    cfg = config_from_args(parse_args(["--pipeline", "recommend", "--output", out, *argv]))
    return main.run(cfg, show_progress=False), out


@pytest.mark.parametrize("streaming", ["--streaming", "--no-streaming"])
def test_synthetic_interactions_are_predicted_then_learnt(tmp_path, streaming):
    summary, out = _run(tmp_path, "--events", "8000", streaming)
    assert summary.events_in == summary.predictions_out == 8000 and summary.balanced
    rows = read_parquet_dir(os.path.join(out, "predictions"))
    assert rows is not None
    assert set(rows.schema.names) >= {"user", "item", "rating", "prediction", "model_version"}
    ratings = rows.column("rating").to_numpy()
    mean_only = float(np.sqrt(np.mean((ratings - ratings[:4000].mean()) ** 2)))
    assert summary.ratings is not None and summary.ratings["rated"] == 8000
    assert summary.ratings["rmse"] < mean_only
    assert any(line.startswith("prequential RMSE") for line in summary.lines())
    assert not any(line.startswith("windows fired") for line in summary.lines())


def test_a_csv_with_its_own_column_names_and_bad_rows(tmp_path):
    data = interactions(InteractionsConfig(events=1500, users=50, items=30, seed=4))
    table = pa.table({"when": data["timestamp"], "who": data["user"], "what": data["item"],
                      "stars": data["rating"]})  # fmt: skip
    path = tmp_path / "ratings.csv"
    pa_csv.write_csv(table, path)
    with open(path, "a") as f:
        f.write('1700009999,someone,,4\n"not a time",someone,x,4\n1700009999,someone,x,many\n')
    summary, _ = _run(tmp_path, "--source", "csv", "--input", str(path), "--time-column",
                      "when", "--user-column", "who", "--item-column", "what",
                      "--rating-column", "stars", "--no-streaming")  # fmt: skip
    assert summary.events_in == 1503
    assert summary.predictions_out == 1500 and summary.dead_lettered == 3 and summary.balanced


def test_hashed_ids_bound_the_embeddings(tmp_path):
    summary, _ = _run(tmp_path, "--events", "5000", "--id-buckets", "64", "--no-streaming")
    assert summary.balanced and summary.ratings is not None
    assert summary.ratings["rmse"] > 0


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("timestamp,user,product\n1700000000,a,b\n")
    with pytest.raises(BadInputError, match="no column 'item'"):
        _run(tmp_path, "--source", "csv", "--input", str(path), "--no-streaming")


def test_recommend_reads_csv_or_synthetic_only(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,value\n1700000000,1\n")
    with pytest.raises(UsageError, match="csv or synthetic"):
        config_from_args(parse_args(["--pipeline", "recommend", "--source", "nab",
                                     "--input", str(path), "--output", str(tmp_path)]))  # fmt: skip


def test_implicit_feedback_without_a_rating_column(tmp_path):
    data = interactions(InteractionsConfig(events=2000, users=60, items=40, seed=6))
    path = tmp_path / "clicks.csv"
    pa_csv.write_csv(pa.table({"timestamp": data["timestamp"], "user": data["user"],
                               "item": data["item"]}), path)  # fmt: skip
    summary, out = _run(tmp_path, "--source", "csv", "--input", str(path),
                        "--rating-column", "", "--no-streaming")  # fmt: skip
    assert summary.predictions_out == 2000 and summary.balanced
    rows = read_parquet_dir(os.path.join(out, "predictions"))
    assert rows is not None and set(rows.column("rating").to_pylist()) == {1.0}
