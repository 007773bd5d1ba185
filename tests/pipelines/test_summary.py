"""The run summary balances delayed-label runs on what every sink wrote."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from model import batch as mb
from model.vocabulary import Stage
from pipelines.summary import RunSummary


def _jsonl(folder: str, rows: list[dict]) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "part-0.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def test_predictions_balance_joined_never_labelled_and_joined_too_late(tmp_path):
    out = str(tmp_path)
    batch = mb.make_batch(["k"] * 10, np.arange(10), np.zeros((10, 1)), event_ids=range(10))
    os.makedirs(f"{out}/predictions")
    pq.write_table(pa.Table.from_batches([batch]), f"{out}/predictions/part-0.parquet")
    window = {"key": "k", "window_start_us": 0, "window_end_us": 10, "pane": "ON_TIME"}
    _jsonl(f"{out}/evaluation", [{**window, "events": 6, "labelled": 6, "accuracy": 0.5}])
    _jsonl(f"{out}/unlabelled", [{"rows": 3, "event_ids": [6, 7, 8]}])
    late = {"reason": "late", "stage": Stage.EVALUATION.value, "rows": 1}
    orphan = {"reason": "label for an unknown event", "stage": Stage.LABELS.value, "rows": 2}
    _jsonl(f"{out}/label_dead_letter", [late, orphan])
    summary = RunSummary.from_outputs(out, events_in=10, seconds=1.0, accumulating=False)
    assert (summary.labels_joined, summary.never_labelled) == (6, 3)
    assert (summary.evaluated_too_late, summary.labels_rejected) == (1, 2)
    text = "\n".join(summary.label_lines())
    assert "+ 1 joined after their window closed: ok" in text
