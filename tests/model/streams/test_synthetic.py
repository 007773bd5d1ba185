import dataclasses

import numpy as np
import pytest

from model import batch as mb
from model.streams.synthetic import Drift, SyntheticConfig, concept_index, events, generate


def test_same_seed_same_stream_other_seed_other_stream():
    cfg = SyntheticConfig(num_events=2000, seed=3)
    a = [c.batch for c in generate(cfg)]
    b = [c.batch for c in generate(cfg)]
    c = [c.batch for c in generate(dataclasses.replace(cfg, seed=4))]
    assert all(x.equals(y) for x, y in zip(a, b, strict=True))
    assert not all(x.equals(y) for x, y in zip(a, c, strict=False))


def test_disorder_and_lateness_relative_to_the_watermark():
    cfg = SyntheticConfig(num_events=20_000, late_fraction=0.02, out_of_order_fraction=0.1)
    watermark = np.iinfo(np.int64).min
    behind = 0
    for chunk in generate(cfg):
        times = mb.event_times_us(chunk.batch)
        behind += int((times < watermark).sum())
        watermark = chunk.watermark_us
    assert 0.01 * cfg.num_events < behind < 0.04 * cfg.num_events
    ids = np.concatenate([c.batch.column("event_id").to_numpy() for c in generate(cfg)])
    assert sorted(ids) == list(range(cfg.num_events))
    assert not np.all(np.diff(ids) > 0)  # arrival order is not event-time order


def test_abrupt_and_gradual_drift_change_the_concept():
    cfg = SyntheticConfig(drifts=(Drift(at_s=10.0), Drift(at_s=20.0, kind="gradual", width_s=10.0)))
    t = np.linspace(0, 40, 4001)
    concept = concept_index(cfg, t, np.random.default_rng(0))
    assert set(concept[t < 10]) == {0}
    assert set(concept[(t >= 10) & (t < 20)]) == {1}
    mixing = concept[(t >= 20) & (t < 30)]
    assert set(mixing) == {1, 2}
    assert set(concept[t >= 30]) == {2}
    batch, _ = events(dataclasses.replace(cfg, num_events=4000))
    assert set(batch.column("label").to_pylist()) == {0, 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_events": 0}, "num_events must be > 0"),
        ({"late_fraction": 1.5}, "late_fraction must be in"),
        ({"late_delay_s": 1.0, "watermark_lag_s": 2.0}, "must exceed watermark_lag_s"),
        ({"drifts": (Drift(5.0), Drift(1.0))}, "drifts must be in time order"),
    ],
)
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**kwargs)
