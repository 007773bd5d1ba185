"""The anomaly step's worker: per-key detectors in state, an LRU of decoded ones."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from model import batch as mb
from model.anomaly.detectors import HOUR_US
from transforms.anomaly.detect import _AnomalyWorker


def _batches(keys: int = 3, batches: int = 6, rows: int = 120) -> list[pa.RecordBatch]:
    rng = np.random.default_rng(0)
    out, t = [], 0
    for b in range(batches):
        names = [f"k{(b + i) % keys}" for i in range(rows)]
        times = (t + np.arange(rows)) * (HOUR_US // 12)
        values = rng.normal(0, 1, (rows, 1)).astype(np.float32)
        if b == 4:
            values[60] += 40  # an anomaly for one key
        ids = list(range(t, t + rows))
        out.append(mb.make_batch(names, times, values, labels=[0] * rows, event_ids=ids))
        t += rows
    return out


def _run(worker: _AnomalyWorker, batches: list[pa.RecordBatch], states: dict | None = None):
    """As the live path runs it: each key's part with that key's state."""
    states = dict(states or {})
    rows = []
    for batch in batches:
        for key, part in mb.split_by_key(batch):
            worker.restore(states.get(key))
            rows += [r for out in worker.apply(part) for r in out.to_pylist()]
            states[key] = worker.snapshot()
    return sorted(rows, key=lambda r: r["event_id"]), states


def test_keys_rebuilt_from_state_score_as_if_they_had_stayed():
    batches = _batches()
    roomy, _ = _run(_AnomalyWorker(resident=100, forecast=True), batches)
    tight = _AnomalyWorker(resident=1, forecast=True)
    squeezed, _ = _run(tight, batches)
    assert squeezed == roomy and tight.rebuilt > 0
    assert len(roomy) == sum(b.num_rows for b in batches)
    assert set(roomy[0]) == {"key", "event_time", "event_id", "label", "value",
                             "anomaly_score", "is_anomaly"}  # fmt: skip
    assert any(r["is_anomaly"] for r in roomy[4 * 120 : 5 * 120])


def test_a_new_worker_goes_on_from_the_state_another_wrote():
    batches = _batches()
    whole, _ = _run(_AnomalyWorker(resident=100, forecast=True), batches)
    head, state = _run(_AnomalyWorker(resident=100, forecast=True), batches[:3])
    later = _AnomalyWorker(resident=100, forecast=True)  # e.g. after a restore
    tail, _ = _run(later, batches[3:], state)
    assert head + tail == whole


def test_a_bounded_run_carries_a_key_on_in_memory():
    # the in-order path: one restore(None), then the key's parts, no state written
    batches = _batches(keys=1)
    live, _ = _run(_AnomalyWorker(resident=100, forecast=True), batches)
    worker = _AnomalyWorker(resident=100, forecast=True)
    worker.restore(None)
    bounded = sorted((r for b in batches for out in worker.apply(b) for r in out.to_pylist()),
                     key=lambda r: r["event_id"])  # fmt: skip
    assert bounded == live and worker.rebuilt == 0


def test_a_part_applied_but_never_written_is_not_trusted():
    batches = _batches(keys=1)
    worker = _AnomalyWorker(resident=100, forecast=False)
    _, states = _run(worker, batches[:2])
    worker.restore(states["k0"])
    worker.apply(batches[2])  # its bundle fails: no snapshot, no state written
    again, _ = _run(worker, batches[2:3], states)
    fresh, _ = _run(_AnomalyWorker(resident=100, forecast=False), batches[2:3], states)
    assert again == fresh


def test_a_restore_to_older_state_drops_what_the_worker_had_in_memory():
    batches = _batches()
    worker = _AnomalyWorker(resident=100, forecast=False)
    _, checkpoint = _run(worker, batches[:2])
    _run(worker, batches[2:4], checkpoint)  # work after the checkpoint, then lost
    replayed, _ = _run(worker, batches[2:4], checkpoint)  # restored: replayed from it
    fresh, _ = _run(_AnomalyWorker(resident=100, forecast=False), batches[2:4], checkpoint)
    assert replayed == fresh


def test_several_columns_are_one_detector_and_old_state_is_refused_clearly():
    rng = np.random.default_rng(1)
    times = np.arange(300) * (HOUR_US // 12)
    values = rng.normal(0, 1, (300, 3)).astype(np.float32)
    batch = mb.make_batch(["k"] * 300, times, values, labels=[0] * 300, event_ids=range(300))
    rows, states = _run(_AnomalyWorker(resident=10, forecast=True), [batch])
    assert len(rows) == 300 and rows[0]["value"] == float(values[0, 0])
    worker = _AnomalyWorker(resident=10, forecast=True)
    narrow = mb.make_batch(["k"] * 10, times[:10] + times[-1], values[:10, :2],
                           labels=[0] * 10, event_ids=range(300, 310))  # fmt: skip
    with pytest.raises(ValueError, match="had 3 feature columns, now 2"):
        _run(worker, [narrow], states)
    old = {"k": states["k"][:16] + pickle.dumps([])}  # a list of per-column detectors
    with pytest.raises(ValueError, match="older version of the anomaly detector"):
        _run(_AnomalyWorker(resident=10, forecast=True), [batch], old)
