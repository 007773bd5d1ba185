"""--backpressure and --memory-budget on the command line: passes measured, no row lost."""

from __future__ import annotations

import pytest

from pipelines import main
from pipelines.cli import UsageError, config_from_args, parse_args


def _run(tmp_path, *argv: str):
    cfg = config_from_args(
        parse_args(["--pipeline", "score", "--output", str(tmp_path / "out"), *argv])
    )
    return main.run(cfg, show_progress=False)


@pytest.mark.slow
def test_scoring_under_a_budget_is_measured(tmp_path, beam_patches):
    summary = _run(tmp_path, "--events", "6000", "--backpressure", "credit",
                   "--memory-budget", "64K")  # fmt: skip
    assert summary.memory is not None and summary.memory["strategy"] == "credit"
    memory = summary.memory["roles"]["scoring"]
    assert memory["steps"] > 0 and memory["over_budget"] == 0
    assert 0 < memory["peak_bytes"] <= 64 << 10
    assert summary.balanced
    assert any(line.startswith("memory ") and "scoring" in line for line in summary.lines())
    if beam_patches == "patched":  # Beam's own runner loses later bundles' metrics
        assert memory["steps"] >= 6000 / 256


def test_out_of_memory_under_a_cap_splits_and_loses_no_row(tmp_path):
    summary = _run(tmp_path, "--events", "3000", "--no-streaming",
                   "--memory-budget", "8K", "--memory-cap", "12K")  # fmt: skip
    assert summary.memory is not None and summary.memory["strategy"] == "unbounded"
    assert summary.memory["roles"]["scoring"]["ooms"] > 0  # 256 rows did not fit: split
    assert summary.predictions_out == 3000 and summary.balanced


def test_the_fused_learner_measures_nothing_and_the_summary_says_so(tmp_path):
    cfg = config_from_args(parse_args([
        "--output", str(tmp_path / "out"), "--events", "2000", "--no-streaming",
        "--backpressure", "accumulate", "--memory-budget", "1M"]))  # fmt: skip
    assert any("fused MLP kernel" in note for note in cfg.notes)
    summary = main.run(cfg, show_progress=False)
    assert summary.memory is not None
    assert summary.memory["roles"]["learning"]["steps"] == 0
    assert any("nothing measured" in line for line in summary.lines())


def test_no_budget_no_memory_line(tmp_path):
    summary = _run(tmp_path, "--events", "2000", "--no-streaming")
    assert summary.memory is None
    assert not any(line.startswith("memory ") for line in summary.lines())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backpressure", "credit"], "needs a memory budget"),
        (["--memory-budget", "lots"], "memory size"),
        (["--backpressure", "aimd", "--memory-budget", "0"], "must be > 0"),
        (["--memory-budget", "2M", "--memory-cap", "1M"], "below the budget"),
    ],
)
def test_bad_memory_options_are_usage_errors(tmp_path, argv, message):
    with pytest.raises(UsageError, match=message):
        config_from_args(parse_args(["--output", str(tmp_path), *argv]))
