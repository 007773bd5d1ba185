"""The online step without Beam: buffered by window, learned in event-time order,
one version per window, and a step restored from its snapshot continues exactly."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from model import batch as mb
from model.learn import LearnerConfig
from model.mlp import MLPClassifier
from model.online import Book, OnlineConfig, PrequentialStep, StepSnapshot, TrainingStep, WindowGrid
from model.online.book import MS
from model.vocabulary import Pane

S = 1_000_000
GRID = WindowGrid(size_us=10 * S, allowed_lateness_us=30 * S)
FACTORY = functools.partial(MLPClassifier, 2, (8,), 2, seed=0)
CONFIG = OnlineConfig(learner=LearnerConfig(lr=0.05, seed=0))


def window_batch(window: int, first_id: int, n: int = 40, key: str = "a", seed: int = 0):
    rng = np.random.default_rng([seed, window, first_id])
    x = rng.standard_normal((n, 2)).astype(np.float32)
    t = window * 10 * S + np.sort(rng.integers(0, 10 * S, n))
    ids = np.arange(first_id, first_id + n)
    return mb.make_batch([key] * n, t, x, labels=(x[:, 0] > 0).astype(int), event_ids=ids)


def drive(
    arrivals,
    *,
    restore_every_call: bool,
    step_class=PrequentialStep,
    factory=FACTORY,
    config=CONFIG,
):
    """Feed ``arrivals`` (('batch', batch) or ('end', window)) to a step the way the
    stateful DoFn does: a buffer of entries, the two snapshots between calls. With
    ``restore_every_call`` every call gets a fresh step restored from the snapshot."""
    make = functools.partial(step_class, factory, config, GRID)
    buffer: list[bytes] = []
    snapshot = StepSnapshot()
    live = make()
    outputs = []
    for kind, value in arrivals:
        step = make() if restore_every_call else live
        step.restore(snapshot)
        if kind == "batch":
            entry, _ = step.on_batch(value)
            buffer.append(entry)
        else:
            result = step.on_window_end((value + 1) * 10 * S - MS, list(buffer))
            if result.keep is not None:
                buffer = list(result.keep)
            outputs.append(result)
        snapshot = StepSnapshot(step.snapshot().book, step.snapshot().model or snapshot.model)
    return outputs


def arrivals_in_order(windows=4):
    out, first = [], 0
    for w in range(windows):
        for _ in range(2):
            out.append(("batch", window_batch(w, first)))
            first += 40
        out.append(("end", w))
    return out


def test_each_window_learned_after_its_end_with_one_version_each():
    results = drive(arrivals_in_order(), restore_every_call=False)
    assert [r.versions for r in results] == [1, 1, 1, 1]
    for w, r in enumerate(results):
        assert r.learned and r.samples == 80
        # predicted by the version trained through the window before (w), then learned
        versions = {
            int(v) for b, _ in r.predictions for v in b.column(mb.MODEL_VERSION).to_pylist()
        }
        assert versions == {w}
        ((artifact, at),) = r.updates
        assert artifact.version == w + 1 and at == (w + 1) * 10 * S  # valid from the next window
        ((rows, stamp),) = r.stats
        (row,) = rows.to_pylist()
        assert (
            row["pane"] == Pane.ON_TIME and row["events"] == 80 and stamp == (w + 1) * 10 * S - MS
        )


def test_a_step_restored_from_its_snapshot_continues_exactly():
    kept = drive(arrivals_in_order(), restore_every_call=False)
    restored = drive(arrivals_in_order(), restore_every_call=True)
    for a, b in zip(kept, restored, strict=True):
        assert all(x.equals(y) for (x, _), (y, _) in zip(a.predictions, b.predictions, strict=True))
        assert [(u.version, t) for u, t in a.updates] == [(u.version, t) for u, t in b.updates]
        assert [r.to_pylist() for r, _ in a.stats] == [r.to_pylist() for r, _ in b.stats]


def test_a_late_batch_is_scored_by_its_own_windows_model_and_learned():
    arrivals = arrivals_in_order(3)  # windows 0, 1, 2 done: versions 1, 2, 3
    arrivals += [("batch", window_batch(1, 10_000)), ("batch", window_batch(3, 20_000))]
    arrivals += [("end", 3)]
    *_, last = drive(arrivals, restore_every_call=True)
    by_window = {
        int(mb.min_event_time_us(b) // (10 * S)): set(b.column(mb.MODEL_VERSION).to_pylist())
        for b, _ in last.predictions
    }
    assert by_window[1] == {1}  # the model as window 1 began: trained through window 0
    assert by_window[3] == {3}
    panes = {
        row["window_start_us"] // (10 * S): row["pane"]
        for rows, _ in last.stats
        for row in rows.to_pylist()
    }
    assert panes == {1: Pane.LATE, 3: Pane.ON_TIME}
    assert last.samples == 80  # the late batch was learned too


def test_the_trainer_publishes_each_version_for_the_windows_after_it():
    step = TrainingStep(FACTORY, CONFIG, GRID, carry_windows=3)
    entry, fire = step.on_batch(window_batch(0, 0))
    assert fire == 10 * S - MS
    assert step.on_batch(window_batch(0, 40))[1] is None  # that window's timer is set
    result = step.on_window_end(fire, [entry])
    assert not result.predictions and not result.stats
    assert [(u.version, t // S) for u, t in result.updates] == [(1, 10), (1, 20), (1, 30)]
    with pytest.raises(ValueError, match="carry_windows must be > 0"):
        TrainingStep(FACTORY, CONFIG, GRID, carry_windows=0)


def test_a_window_end_without_ready_batches_changes_nothing():
    step = PrequentialStep(FACTORY, CONFIG, GRID)
    entry, _ = step.on_batch(window_batch(2, 0))
    result = step.on_window_end(10 * S - MS, [entry])  # window 0 ended: nothing of it
    assert not result.learned and result.keep is None and step.snapshot().model is None


def test_book_snapshot_round_trip():
    book = Book()
    book.add(window_batch(0, 0), end_us=10 * S)
    book.schedule(10 * S - MS)
    copy = Book()
    copy.restore(book.snapshot())
    assert copy == book
    copy.restore(None)
    assert copy == Book()


def test_window_grid_validation_and_offsets():
    grid = WindowGrid(size_us=10 * S, offset_us=3 * S)
    assert grid.start_of(12 * S) == 3 * S and grid.end_of(13 * S) == 23 * S
    with pytest.raises(ValueError, match="whole number of ms"):
        WindowGrid(size_us=4_099_999)
    framed = WindowGrid(size_us=10 * S, window_us=2 * S)
    assert framed.framed and not grid.framed
    assert not WindowGrid(size_us=10 * S, window_us=10 * S).framed
    with pytest.raises(ValueError, match="whole windows"):
        WindowGrid(size_us=10 * S, window_us=3 * S)


def _sparse_run(config, *, restore_every_call: bool, windows: int = 12, n: int = 3):
    """A trainer over ``windows`` windows of ``n`` events each, every window ended
    after its batch; the updates of every window end."""
    make = functools.partial(TrainingStep, FACTORY, config, GRID, 2)
    buffer: list[bytes] = []
    snapshot = StepSnapshot()
    live = make()
    out = []
    for w in range(windows):
        step = make() if restore_every_call else live
        step.restore(snapshot)
        entry, _ = step.on_batch(window_batch(w, w * n, n=n))
        buffer.append(entry)
        result = step.on_window_end((w + 1) * 10 * S - MS, list(buffer))
        buffer = list(result.keep or [])
        out.append(result)
        snapshot = StepSnapshot(step.snapshot().book, step.snapshot().model or snapshot.model)
    return out


@pytest.mark.parametrize("restore_every_call", [False, True])
def test_versions_follow_the_cadence_and_every_window_gets_the_newest(restore_every_call):
    config = OnlineConfig(learner=CONFIG.learner, publish_min_samples=10)
    results = _sparse_run(config, restore_every_call=restore_every_call)
    # 3 samples a window: a version once 10 are learned since the last (the first at once)
    assert [r.versions for r in results] == [1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]
    newest = {}  # window start (s) -> the newest version offered to it
    for r in results:
        for artifact, at in r.updates:
            newest[at // S] = max(newest.get(at // S, 0), artifact.version)
    # every window after the first is offered the newest version published before it
    assert [newest[(w + 1) * 10] for w in range(12)] == [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    # a version served on is the published one, weights and all
    served = [a for r in results[1:4] for a, _ in r.updates]
    assert {a.data for a in served} == {results[0].updates[0][0].data}
    # a publication stamps the 2 windows it carries to; serving on adds only the one
    # window its earlier stamps do not reach yet: nothing grows with the windows seen
    assert [len(r.updates) for r in results[:5]] == [2, 1, 1, 1, 2]
    stamps = [at for r in results for _, at in r.updates]
    assert len(stamps) == len(set(stamps)) + sum(r.versions for r in results[1:])


def test_a_time_cadence_publishes_after_that_much_event_time():
    config = OnlineConfig(
        learner=CONFIG.learner, publish_min_samples=1_000, publish_every_us=30 * S
    )
    results = _sparse_run(config, restore_every_call=True)
    assert [r.versions for r in results] == [1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="publish_min_samples must be > 0"):
        OnlineConfig(publish_min_samples=0)


def _flip_stream(windows: int = 20, n: int = 100, flip_at: int = 10):
    """Windows of a learnable concept whose labels flip at window ``flip_at``."""
    out = []
    for w in range(windows):
        b = window_batch(w, w * n, n=n, seed=3)
        if w >= flip_at:
            y = 1 - mb.labels_numpy(b)
            b = mb.make_batch(
                [str(k) for k in b.column(mb.KEY).to_pylist()],
                mb.event_times_us(b),
                mb.features_numpy(b),
                labels=y,
                event_ids=b.column(mb.EVENT_ID).to_numpy(),
            )
        out.append(b)
    return out


def _accuracy_after_flip(adapt: str, detector: str = "page-hinkley") -> tuple[float, int]:
    # a slow learner (lr 0.002): left alone it takes long to unlearn the old concept
    slow = LearnerConfig(lr=0.002, seed=0)
    config = OnlineConfig(
        learner=slow, step_rows=1, adapt=adapt, boost=20.0, adapt_detector=detector
    )
    step = PrequentialStep(FACTORY, config, GRID)
    correct, total, adaptations, backgrounds = 0, 0, 0, 0
    for w, batch in enumerate(_flip_stream()):
        entry, _ = step.on_batch(batch)
        result = step.on_window_end((w + 1) * 10 * S - MS, [entry])
        adaptations += result.adaptations
        backgrounds += result.backgrounds
        if adapt == "background":
            # every learner that took over was started at a warning before the alarm
            assert backgrounds >= adaptations, w
        if w in (10, 11, 12):  # the three windows after the flip
            for scored, _ in result.predictions:
                pred = scored.column(mb.PREDICTION).to_numpy()
                correct += int((pred == scored.column(mb.LABEL).to_numpy()).sum())
                total += len(pred)
    return correct / total, adaptations


def test_adaptation_policies_act_on_an_alarm_and_recover_faster():
    plain, none_alarms = _accuracy_after_flip("none")
    reset, reset_alarms = _accuracy_after_flip("reset")
    boost, boost_alarms = _accuracy_after_flip("lr-boost")
    background, background_alarms = _accuracy_after_flip("background")
    assert none_alarms == 0 and reset_alarms >= 1 and boost_alarms >= 1
    assert background_alarms >= 1
    assert reset > plain + 0.05 and boost > plain + 0.05, (plain, reset, boost)
    # the learner started at the warning had learned the new concept for a while
    assert background > plain + 0.05 and background >= reset, (plain, reset, background)
    # DDM warns by itself (Page-Hinkley by a copy of half its threshold)
    ddm, ddm_alarms = _accuracy_after_flip("background", "ddm")
    assert ddm_alarms >= 1 and ddm > plain + 0.05
    with pytest.raises(ValueError, match="background_samples must be > 0"):
        OnlineConfig(background_samples=0)
    with pytest.raises(ValueError, match="adapt must be one of"):
        OnlineConfig(adapt="retrain")


def test_a_batch_spanning_windows_is_cut_at_them():
    from model.online.book import split_at_windows

    grid = WindowGrid(size_us=10 * S, offset_us=2 * S)
    times = np.array([25, 3, 14, 5, 31, 11]) * S  # windows [2,12) [12,22) [22,32)
    batch = mb.make_batch(["k"] * 6, times, np.zeros((6, 1)), event_ids=range(6))
    pieces = split_at_windows(batch, grid)
    assert [p.column(mb.EVENT_ID).to_pylist() for p in pieces] == [[1, 3, 5], [2], [0, 4]]
    assert split_at_windows(pieces[0], grid) == [pieces[0]]


def _new_class_stream(windows: int = 10, new_from: int = 4):
    """Two classes, then from window ``new_from`` a third (rows with x1 > 0.7), and a
    late batch of window ``new_from - 1`` (before the class) after the growth."""
    out, first = [], 0
    for w in range(windows):
        b = window_batch(w, first, n=80)
        first += 80
        if w >= new_from:
            x = mb.features_numpy(b)
            y = np.where(x[:, 1] > 0.7, 2, (x[:, 0] > 0).astype(int))
            b = mb.make_batch(
                ["a"] * 80, mb.event_times_us(b), x, labels=y, event_ids=range(first - 80, first)
            )
        out.append(("batch", b))
        out.append(("end", w))
        if w == new_from + 1:
            out.append(("batch", window_batch(new_from - 1, 10_000, n=5)))
            out.append(("end", w))
    return out


@pytest.mark.parametrize("step_class", [PrequentialStep, TrainingStep])
def test_a_new_class_grows_the_head_and_is_learned(step_class):
    factory = functools.partial(MLPClassifier, 2, (8,), num_classes=2, seed=0)
    config = OnlineConfig(learner=LearnerConfig(lr=0.05, seed=0), step_rows=8, grow_classes=True)
    run = functools.partial(
        drive, _new_class_stream(), step_class=step_class, factory=factory, config=config
    )
    live, restored = run(restore_every_call=False), run(restore_every_call=True)
    assert [r.classes_added for r in live] == [0, 0, 0, 0, 1] + [0] * 6
    for a, b in zip(live, restored, strict=True):  # a grown step restores exactly
        assert [v.version for v, _ in a.updates] == [v.version for v, _ in b.updates]
        assert [p.column(mb.PREDICTION) for p, _ in a.predictions] == [
            p.column(mb.PREDICTION) for p, _ in b.predictions
        ]
    before, after = live[3].updates[0][0], live[-1].updates[0][0]
    x = np.random.default_rng(1).standard_normal((2000, 2)).astype(np.float32)
    y = np.where(x[:, 1] > 0.7, 2, (x[:, 0] > 0).astype(int))
    assert before.build(torch.device("cpu"))(torch.from_numpy(x)).shape == (2000, 2)
    logits = after.build(torch.device("cpu"))(torch.from_numpy(x))
    assert logits.shape == (2000, 3)
    pred = logits.argmax(1).numpy()
    assert (pred == y).mean() > 0.85 and (pred[y == 2] == 2).mean() > 0.6
    if step_class is PrequentialStep:  # scored: the late batch by its window's 2-class model
        late = live[6].predictions[0][0]
        assert set(late.column(mb.PREDICTION).to_pylist()) <= {0, 1}


def test_a_grown_step_serves_its_last_version_on_with_that_versions_head():
    # publish only every 500 samples: windows in between serve the last version on,
    # which was published with two classes before the head grew
    factory = functools.partial(MLPClassifier, 2, (8,), num_classes=2, seed=0)
    config = OnlineConfig(
        learner=LearnerConfig(lr=0.05, seed=0), grow_classes=True, publish_min_samples=500
    )
    results = drive(
        _new_class_stream(), restore_every_call=True, step_class=TrainingStep,
        factory=factory, config=config,
    )  # fmt: skip
    served = [a for r in results for a, _ in r.updates]
    assert len({a.version for a in served}) > 1
    for artifact in served:  # every version builds, with the head it was learned with
        artifact.build(torch.device("cpu"))


def test_growth_needs_a_factory_that_takes_num_classes():
    with pytest.raises(ValueError, match="num_classes="):
        TrainingStep(FACTORY, OnlineConfig(grow_classes=True), GRID)


def test_without_growth_a_label_beyond_the_classes_is_an_error():
    with pytest.raises(ValueError, match="class"):
        drive(_new_class_stream(), restore_every_call=False)
