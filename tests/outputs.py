"""Run a pipeline through ``pipelines.main.run`` and read back what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import main
from pipelines.cli import config_from_args, parse_args
from pipelines.summary import predictions_by_event


def run_and_read(
    runner: str, argv: list[str], out: Path, **kwargs: Any
) -> list[tuple[int, int, int]]:
    """Run the CLI's ``argv`` (plus ``--output out``) on ``runner``; its predictions."""
    cfg = config_from_args(parse_args([*argv, "--output", str(out)]))
    assert main.run(cfg, runner, show_progress=False, **kwargs).balanced
    return predictions_by_event(str(out))
