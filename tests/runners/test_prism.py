"""Prism, Beam's portable local runner: the same results as the DirectRunner,
TestStream replays and stateful online learning included."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import main
from runners import prism
from tests.outputs import run_and_read


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return prism.prism_binary()
    except prism.PrismUnavailable as err:
        pytest.skip(str(err))


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
    argv = [*extra, "--events", "3000"]
    direct = run_and_read("DirectRunner", argv, tmp_path / "direct")
    on_prism = run_and_read("PrismRunner", argv, tmp_path / "prism")
    assert on_prism == direct
    assert len(direct) > 2900  # a few late events are dead-lettered


def test_without_go_prism_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SML_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no go here
    with pytest.raises(prism.PrismUnavailable, match="needs Go"):
        prism.prism_binary()
    out = str(tmp_path / "out")
    assert main.main(["--runner", "PrismRunner", "--output", out, "--quiet"]) == main.EXIT_RUNTIME
    assert "runner unavailable" in capsys.readouterr().err
