"""The summary's figures, counted from the pane rows a run wrote."""

from __future__ import annotations

import pyarrow as pa

from model.stats import STATS_SCHEMA
from pipelines.summary import RunSummary
from transforms.io.sinks import batch_to_json_lines

S = 1_000_000


def _pane(key: str, start_s: int, pane: str, index: int, events: int, accuracy: float,
          version: int) -> dict:  # fmt: skip
    return {
        "key": key, "window_start_us": start_s * S, "window_end_us": (start_s + 10) * S,
        "pane": pane, "pane_index": index, "is_last": False, "events": events,
        "mean_score": 0.5, "labelled": events, "accuracy": accuracy,
        "min_version": version, "max_version": version,
    }  # fmt: skip


def _summary(tmp_path, panes: list[dict], accumulating: bool) -> RunSummary:
    folder = tmp_path / "windows"
    folder.mkdir()
    batch = pa.RecordBatch.from_pylist(panes, schema=STATS_SCHEMA)
    (folder / "part-1.jsonl").write_bytes(batch_to_json_lines(batch))
    return RunSummary.from_outputs(
        str(tmp_path), events_in=0, seconds=1.0, accumulating=accumulating
    )


def test_discarding_panes_add_up_per_window(tmp_path):
    panes = [
        _pane("a", 0, "EARLY", 0, 2, 0.5, 1),
        _pane("a", 0, "ON_TIME", 1, 2, 1.0, 2),
        _pane("b", 0, "LATE", 2, 4, 0.25, 3),
        _pane("a", 10, "ON_TIME", 0, 1, 1.0, 3),
    ]
    summary = _summary(tmp_path, panes, accumulating=False)
    first, second = summary.windows
    assert (first.events, first.labelled, first.correct) == (8, 8, 4)
    assert (first.min_version, first.max_version) == (1, 3)
    assert (second.start_us, second.events, second.correct) == (10 * S, 1, 1)
    assert summary.late_accepted == 4 and summary.windows_fired == 4


def test_accumulating_panes_count_each_keys_last_pane(tmp_path):
    panes = [
        _pane("a", 0, "EARLY", 0, 2, 0.5, 1),
        _pane("a", 0, "ON_TIME", 1, 4, 0.75, 2),
        _pane("a", 0, "LATE", 2, 5, 0.8, 2),  # one event came late
        _pane("b", 0, "ON_TIME", 0, 3, 1.0, 1),
    ]
    summary = _summary(tmp_path, panes, accumulating=True)
    (window,) = summary.windows
    assert (window.events, window.labelled, window.correct) == (8, 8, 7)
    assert (window.min_version, window.max_version) == (1, 2)
    assert summary.late_accepted == 1 and summary.windows_fired == 4


def test_rows_a_replay_wrote_again_count_once(tmp_path):
    # a bundle replayed after a restore, with other boundaries, repeats rows of an
    # earlier file in a new one: the figures of a restored run count each key and
    # event_id once
    import pyarrow.parquet as pq

    from pipelines.summary import predictions_by_event

    folder = tmp_path / "predictions"
    folder.mkdir()

    def part(name: str, ids: list[int], keys: list[str]) -> None:
        rows = {"key": keys, "event_id": ids, "prediction": [i % 2 for i in ids],
                "model_version": [1] * len(ids)}  # fmt: skip
        pq.write_table(pa.table(rows), folder / f"part-{name}.parquet")

    part("a", [1, 2, 3], ["x", "x", "y"])
    part("b", [2, 3, 4], ["x", "y", "y"])  # replayed 2 and 3
    part("c", [2], ["y"])  # another key's event 2: its own event
    summary = RunSummary.from_outputs(str(tmp_path), events_in=5, seconds=1.0,
                                      accumulating=False, restored=True)  # fmt: skip
    assert (summary.predictions_out, summary.predictions_repeated) == (5, 2)
    # a run that never restored counts its rows as they are (ids may repeat across keys
    # of several inputs: a CSV's default event_id is its line number)
    plain = RunSummary.from_outputs(str(tmp_path), events_in=7, seconds=1.0,
                                    accumulating=False)  # fmt: skip
    assert (plain.predictions_out, plain.predictions_repeated, plain.balanced) == (7, 0, True)
    assert summary.balanced and "repeated rows" in "\n".join(summary.lines())
    once = [(1, 1, 1), (2, 0, 1), (2, 0, 1), (3, 1, 1), (4, 0, 1)]  # 2: two keys' events
    assert predictions_by_event(str(tmp_path), once=True) == once
    # the same event again with another prediction: kept, so that a comparison sees it
    pq.write_table(pa.table({"key": ["y"], "event_id": [4], "prediction": [1],
                             "model_version": [1]}), folder / "part-d.parquet")  # fmt: skip
    assert (4, 1, 1) in predictions_by_event(str(tmp_path), once=True)
    assert len(predictions_by_event(str(tmp_path))) == 8  # without once: every row
