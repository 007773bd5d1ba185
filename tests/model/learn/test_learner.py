"""The incremental learner: learning, determinism, snapshots, replay and EWC."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from model.learn.backend import AutogradBackend
from model.learn.learner import IncrementalLearner, LearnerConfig, dumps_state, loads_state
from model.learn.replay import Reservoir
from model.mlp import MLPClassifier


def stream(concept: np.ndarray, batches: int, seed: int, size: int = 64):
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        x = rng.standard_normal((size, len(concept))).astype(np.float32)
        yield x, (x @ concept > 0).astype(np.int64)


def accuracy(learner: IncrementalLearner, concept: np.ndarray, seed: int = 99) -> float:
    x, y = next(stream(concept, 1, seed, size=2000))
    return float((learner.predict(x)[0] == y).mean())


def new_learner(**kwargs) -> IncrementalLearner:
    return IncrementalLearner(MLPClassifier(4, (16,), seed=0), LearnerConfig(seed=0, **kwargs))


A = np.array([1.0, 1.0, 0.0, 0.0], np.float32)
B = np.array([-1.0, 0.0, 1.0, 0.0], np.float32)


def test_learns_a_concept_one_batch_at_a_time():
    learner = new_learner()
    assert accuracy(learner, A) < 0.8
    for x, y in stream(A, 60, seed=1):
        learner.learn(x, y)
    assert accuracy(learner, A) > 0.95
    assert learner.samples == 60 * 64 and learner.steps == 60


def test_gradient_accumulation_steps_every_n_batches():
    learner = new_learner(accumulate=4)
    for x, y in stream(A, 10, seed=1):
        learner.learn(x, y)
    assert learner.batches == 10 and learner.steps == 2


@pytest.mark.parametrize(
    "kwargs", [{}, {"replay_size": 200, "ewc_lambda": 5.0, "optimizer": "sgd"}]
)
def test_same_seed_same_model(kwargs):
    a, b = new_learner(**kwargs), new_learner(**kwargs)
    for x, y in stream(A, 20, seed=2):
        assert a.learn(x, y) == b.learn(x, y)
    for pa_, pb in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(pa_, pb)


@pytest.mark.parametrize("kernel", ["autograd", "fused"])
@pytest.mark.parametrize("accumulate", [1, 5])
def test_snapshot_restore_mid_stream_equals_uninterrupted_run(kernel, accumulate):
    # With accumulate=5 the snapshot after 12 batches holds a partly summed gradient.
    cfg = {
        "replay_size": 300,
        "replay_batch": 32,
        "ewc_lambda": 2.0,
        "ewc_every": 5,
        "standardize": True,
        "accumulate": accumulate,
        "kernel": kernel,
    }
    batches = list(stream(A, 15, seed=3)) + list(stream(B, 15, seed=4))
    straight = new_learner(**cfg)
    for x, y in batches:
        straight.learn(x, y)
    first = new_learner(**cfg)
    for x, y in batches[:12]:
        first.learn(x, y)
    resumed = IncrementalLearner(MLPClassifier(4, (16,), seed=123), LearnerConfig(seed=0, **cfg))
    resumed.restore(loads_state(dumps_state(first.snapshot())))
    for x, y in batches[12:]:
        resumed.learn(x, y)
    for p, q in zip(straight.module.parameters(), resumed.module.parameters(), strict=True):
        assert torch.equal(p, q)
    assert straight.replay.seen == resumed.replay.seen


def test_learning_does_not_mutate_its_input():
    learner = new_learner(replay_size=10)
    x, y = next(stream(A, 1, seed=5))
    x0, y0 = x.copy(), y.copy()
    learner.learn(x, y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_set_lr_on_demand():
    learner = new_learner(lr=0.01)
    learner.set_lr(0.1)
    assert learner.lr == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lr must be > 0"):
        learner.set_lr(0)


def recurring(learner: IncrementalLearner) -> float:
    """Learn A, then B; accuracy on A when it comes back (before relearning it)."""
    for x, y in stream(A, 80, seed=10):
        learner.learn(x, y)
    for x, y in stream(B, 150, seed=11):
        learner.learn(x, y)
    return accuracy(learner, A)


@pytest.mark.parametrize("kernel", ["autograd", "fused"])
def test_replay_and_ewc_keep_a_recurring_concept(kernel):
    def run(**kwargs) -> tuple[float, float]:
        learner = new_learner(optimizer="sgd", lr=0.05, kernel=kernel, **kwargs)
        on_a = recurring(learner)
        assert all(torch.isfinite(p).all() for p in learner.module.parameters())
        return on_a, accuracy(learner, B)

    plain_a, _ = run()
    replay_a, replay_b = run(replay_size=2000, replay_batch=128)
    # A stiff penalty (lr * lambda * F well above 2) must not diverge.
    ewc_a, ewc_b = run(ewc_lambda=500.0, ewc_every=20)
    assert replay_a > plain_a + 0.1, (plain_a, replay_a)
    assert ewc_a > plain_a + 0.1, (plain_a, ewc_a)
    # ... and both still learned the new concept (B contradicts A on most inputs).
    assert replay_b > 0.65 and ewc_b > 0.65, (replay_b, ewc_b)


def test_reservoir_is_a_uniform_sample():
    r = Reservoir(capacity=1000, seed=0)
    values = np.arange(100_000)
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        r.add(chunk[:, None].astype(np.float32), chunk)
    assert r.size == 1000 and r.seen == 100_000
    assert r.y is not None
    # Uniform over everything seen: the mean is near the middle, all ranges present.
    assert abs(r.y.mean() - 50_000) < 3_000
    assert np.histogram(r.y, bins=10, range=(0, 100_000))[0].min() > 60


def test_config_validation():
    with pytest.raises(ValueError, match="optimizer must be"):
        LearnerConfig(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="accumulate must be > 0"):
        LearnerConfig(accumulate=0)


def test_standardize_learns_from_raw_features_of_any_range():
    concept = np.array([1.0, -1.0, 0.0, 0.0], np.float32)
    plain, scaled = new_learner(lr=0.01), new_learner(lr=0.01, standardize=True)
    rng = np.random.default_rng(0)
    for _ in range(80):
        x = (rng.standard_normal((64, 4)) * 50 + 400).astype(np.float32)
        y = ((x - 400) @ concept > 0).astype(np.int64)
        plain.learn(x, y)
        scaled.learn(x, y)
    x = (rng.standard_normal((2000, 4)) * 50 + 400).astype(np.float32)
    y = ((x - 400) @ concept > 0).astype(np.int64)
    assert (scaled.predict(x)[0] == y).mean() > 0.9
    assert (scaled.predict(x)[0] == y).mean() > (plain.predict(x)[0] == y).mean() + 0.1
    restored = new_learner(lr=0.01, standardize=True)
    restored.restore(loads_state(dumps_state(scaled.snapshot())))
    np.testing.assert_array_equal(restored.predict(x)[0], scaled.predict(x)[0])


def test_export_folds_the_scaling_into_the_published_model():
    from model.artifact import ModelArtifact
    from model.handler import TorchModelHandler

    factory = functools.partial(MLPClassifier, 4, (16,), 2, seed=0)
    learner = IncrementalLearner(factory(), LearnerConfig(standardize=True, seed=0))
    plain_module, plain_factory = learner.export(factory)
    assert plain_module is learner.module and plain_factory is factory  # nothing learned yet
    rng = np.random.default_rng(0)
    for _ in range(40):
        x = (rng.standard_normal((64, 4)) * 50 + 400).astype(np.float32)
        learner.learn(x, ((x - 400) @ A > 0).astype(np.int64))
    module, rebuilt = learner.export(factory)
    scorer = TorchModelHandler(ModelArtifact.from_module(module, 1, factory=rebuilt), "cpu")
    x = (rng.standard_normal((500, 4)) * 50 + 400).astype(np.float32)
    assert (scorer.predict(torch.from_numpy(x))[0] == learner.predict(x)[0]).mean() > 0.99
    past = IncrementalLearner(factory(), LearnerConfig(standardize=True, seed=0))
    past.load_inference_state(learner.inference_state())
    np.testing.assert_array_equal(past.predict(x)[0], learner.predict(x)[0])


def test_state_bytes_round_trip_tensors_arrays_and_exotic_dtypes():
    state = {
        "w": torch.arange(6.0).reshape(2, 3),
        "rest": [np.ones(2), (torch.tensor(3),)],
        "n": None,
    }
    data = dumps_state(state)
    back = loads_state(data)
    assert torch.equal(back["w"], state["w"]) and back["w"].dtype == torch.float32
    np.testing.assert_array_equal(back["rest"][0], np.ones(2))
    assert back["rest"][1][0].item() == 3 and back["n"] is None
    back["w"].add_(1)  # a restored tensor is writable and owns its memory
    assert not torch.equal(back["w"], state["w"])
    # numpy has no bfloat16: such states go through torch.save instead.
    exotic = {"w": torch.ones(2, dtype=torch.bfloat16)}
    again = loads_state(dumps_state(exotic))
    assert again["w"].dtype == torch.bfloat16 and torch.equal(again["w"], exotic["w"])
    # State written before this format (a bare torch.save) still loads.
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    assert torch.equal(loads_state(buf.getvalue())["w"], state["w"])


@pytest.mark.parametrize("kernel", ["autograd", "fused"])
def test_restore_in_place_drops_a_gradient_being_accumulated(kernel):
    batches = list(stream(A, 6, seed=5))
    fresh = new_learner(accumulate=2, kernel=kernel)
    reused = new_learner(accumulate=2, kernel=kernel)
    snap = fresh.snapshot()  # nothing accumulated yet
    reused.learn(*batches[0])  # half an accumulation, then back to the snapshot
    reused.restore(snap)
    for x, y in batches:
        fresh.learn(x, y)
        reused.learn(x, y)
    for p, q in zip(fresh.module.parameters(), reused.module.parameters(), strict=True):
        assert torch.equal(p, q)


def test_the_training_device_is_explicit():
    with pytest.raises(ValueError, match="device must be"):
        LearnerConfig(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            LearnerConfig(device="cuda:0")
    # The device path (inputs, targets and predictions moved explicitly), on the CPU.
    for device in ("cpu", "auto"):
        learner = new_learner(device=device, kernel="autograd", standardize=True)
        assert isinstance(learner.backend, AutogradBackend)
        assert next(learner.module.parameters()).device == learner.device
        for x, y in stream(A, 30, seed=1):
            learner.learn(x, y)
        assert accuracy(learner, A) > 0.9
        exported, _ = learner.export(lambda: MLPClassifier(4, (16,), seed=0))
        assert {t.device for t in exported.state_dict().values()} == {learner.device}


@pytest.mark.parametrize("kernel", ["autograd", "fused"])
def test_the_snapshot_layout_is_one_for_both_kernels(kernel):
    # Snapshots already written restore: the same keys, and per-parameter tensors
    # for the gradient and EWC's arrays whichever kernel trained.
    learner = new_learner(
        kernel=kernel, accumulate=2, ewc_lambda=1.0, ewc_every=1, replay_size=10, standardize=True
    )
    for x, y in stream(A, 3, seed=1):
        learner.learn(x, y)
    snap = learner.snapshot()
    assert list(snap) == [
        "module", "optimizer", "grads", "replay", "fisher", "anchor", "counters", "scaler"
    ]  # fmt: skip
    shapes = [p.shape for p in learner.module.parameters()]
    for key in ("grads", "fisher", "anchor"):
        assert all(isinstance(t, torch.Tensor) for t in snap[key])
        assert [t.shape for t in snap[key]] == shapes, key
    assert snap["counters"] == (3 * 64, 3, 1)
    assert set(snap["replay"]) == {"x", "y", "seen", "rng"} and snap["scaler"][0] == 3 * 64
