"""Prism, Beam's portable local runner: the same results as the DirectRunner,
TestStream replays and stateful online learning included."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import main
from pipelines.cli import config_from_args, parse_args
from runners import prism
from transforms.sinks import read_parquet_dir


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return prism.prism_binary()
    except prism.PrismUnavailable as err:
        pytest.skip(str(err))


def _predictions(out: Path) -> list[tuple[int, int, int]]:
    table = read_parquet_dir(str(out / "predictions"))
    assert table is not None
    columns = [table.column(c).to_pylist() for c in ("event_id", "prediction", "model_version")]
    return sorted(zip(*columns, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--pipeline", "score", "--streaming"],
        ["--pipeline", "classify", "--mode", "coupled", "--streaming"],
        ["--pipeline", "classify", "--no-streaming"],
    ],
    ids=["score-teststream", "coupled-teststream", "decoupled-bounded"],
)
def test_pipelines_on_prism_match_the_direct_runner(binary, tmp_path, extra):
    results = {}
    for runner in ("DirectRunner", "PrismRunner"):
        out = tmp_path / runner
        argv = [*extra, "--events", "3000", "--output", str(out)]
        summary = main.run(config_from_args(parse_args(argv)), runner, show_progress=False)
        assert summary.balanced
        results[runner] = _predictions(out)
    assert results["PrismRunner"] == results["DirectRunner"]
    assert len(results["PrismRunner"]) > 2900  # a few late events are dead-lettered


def test_without_go_prism_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(prism.PrismUnavailable, match="needs Go"):
        prism.prism_binary()
    out = str(tmp_path / "out")
    assert main.main(["--runner", "PrismRunner", "--output", out, "--quiet"]) == main.EXIT_RUNTIME
    assert "runner unavailable" in capsys.readouterr().err
