"""Run a pipeline through ``pipelines.main.run`` and read back what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines import main
from pipelines.cli import config_from_args, parse_args
from transforms.sinks import read_parquet_dir


def predictions(out: Path) -> list[tuple[int, int, int]]:
    """``(event_id, prediction, model_version)`` of every prediction row, sorted."""
    table = read_parquet_dir(str(out / "predictions"))
    assert table is not None
    columns = [table.column(c).to_pylist() for c in ("event_id", "prediction", "model_version")]
    return sorted(zip(*columns, strict=True))


def run_and_read(
    runner: str, argv: list[str], out: Path, **kwargs: Any
) -> list[tuple[int, int, int]]:
    """Run the CLI's ``argv`` (plus ``--output out``) on ``runner``; its predictions."""
    cfg = config_from_args(parse_args([*argv, "--output", str(out)]))
    assert main.run(cfg, runner, show_progress=False, **kwargs).balanced
    return predictions(out)
