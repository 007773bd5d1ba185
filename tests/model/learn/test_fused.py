"""The fused MLP kernel: same training as autograd, faster, and honest about scope."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from model.learn import native
from model.learn.backend import AutogradBackend, FusedBackend
from model.learn.fused import FusedMLP, mlp_linears
from model.learn.learner import IncrementalLearner, LearnerConfig
from model.mlp import MLPClassifier


def learner(kernel: str, module: nn.Module | None = None, **kwargs) -> IncrementalLearner:
    module = module or MLPClassifier(5, (16, 8), 3, seed=0)
    return IncrementalLearner(module, LearnerConfig(kernel=kernel, seed=0, **kwargs))  # type: ignore[arg-type]


def fused_kernel(fast: IncrementalLearner) -> FusedMLP:
    """The fused kernel a learner trains with."""
    assert isinstance(fast.backend, FusedBackend)
    return fast.backend.kernel


def batches(n: int, seed: int = 0, rows: int = 48):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((5, 3))
    for _ in range(n):
        x = (rng.standard_normal((rows, 5)) * 3 + 1).astype(np.float32)
        yield x, (x @ w).argmax(axis=1).astype(np.int64)


CONFIGS = [
    {"optimizer": "adam", "lr": 0.01},
    {"optimizer": "sgd", "lr": 0.05},
    {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9},
    {"optimizer": "adam", "lr": 0.01, "accumulate": 3, "replay_size": 100, "replay_batch": 16},
    {"optimizer": "sgd", "lr": 0.05, "ewc_lambda": 50.0, "ewc_every": 4, "standardize": True},
]


@pytest.fixture(params=["c", "numpy"])
def backend(request, monkeypatch):
    """The fused kernel in C (built here: CI has a compiler) and its numpy fallback."""
    if request.param == "numpy":
        monkeypatch.setattr(native, "mlp_library", lambda: None)
    else:
        assert native.mlp_library() is not None, "the C kernels must build here"
    return request.param


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_fused_trains_exactly_like_autograd(cfg, backend):
    slow, fast = learner("autograd", **cfg), learner("fused", **cfg)
    assert isinstance(slow.backend, AutogradBackend)
    assert (fused_kernel(fast).io is not None) == (backend == "c")
    for x, y in batches(40):
        assert fast.learn(x, y) == pytest.approx(slow.learn(x, y), rel=1e-4, abs=1e-6)
    for p, q in zip(slow.module.parameters(), fast.module.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)
    x, _ = next(batches(1, seed=9))
    np.testing.assert_array_equal(fast.predict(x)[0], slow.predict(x)[0])
    np.testing.assert_allclose(fast.predict(x)[1], slow.predict(x)[1], rtol=1e-4)
    # The optimizer state is torch's own: a snapshot restores into an autograd learner.
    other = learner("autograd", **cfg)
    other.restore(fast.snapshot())
    for x, y in batches(5, seed=3):
        assert other.learn(x, y) == pytest.approx(slow.learn(x, y), rel=1e-3, abs=1e-5)


def test_c_and_numpy_kernels_agree_over_a_long_stream(monkeypatch):
    """Scaling, forward, backward, Adam and the moments, 300 steps: the same
    predictions and float32-close weights and moments."""
    c = learner("fused", MLPClassifier(5, (32,), 3, seed=0), standardize=True, lr=0.01)
    monkeypatch.setattr(native, "mlp_library", lambda: None)
    py = learner("fused", MLPClassifier(5, (32,), 3, seed=0), standardize=True, lr=0.01)
    assert fused_kernel(c).io is not None and fused_kernel(py).io is None
    agree = total = 0
    for x, y in batches(300, rows=100):
        pc, cc, lc = c.predict_learn(x, y)
        pp, cp, lp = py.predict_learn(x, y)
        agree += int((pc == pp).sum())
        total += len(pc)
        assert lc == pytest.approx(lp, rel=1e-3)
    assert agree / total > 0.999
    for p, q in zip(c.module.parameters(), py.module.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(c.scaler.mean, py.scaler.mean, rtol=1e-9)
    np.testing.assert_allclose(c.scaler.m2, py.scaler.m2, rtol=1e-9)
    assert c.scaler.n == py.scaler.n == 300 * 100


def test_c_kernels_give_the_same_bits_however_they_are_compiled(tmp_path, monkeypatch):
    """Unoptimized and for-this-CPU builds (vector width, FMA available) learn
    bit-identical weights: a replay on another machine learns the same model."""
    portable = ("-O0", "-ffp-contract=off", "-shared", "-fPIC", "-std=c99")
    libs = [native.mlp_library(), native.load(native.build(directory=tmp_path, flags=portable))]
    trained = []
    for lib in libs:
        monkeypatch.setattr(native, "mlp_library", lambda lib=lib: lib)
        fast = learner("fused", MLPClassifier(7, (24, 16), 3, seed=0), standardize=True)
        io = fused_kernel(fast).io
        assert io is not None and io.lib is lib
        rng = np.random.default_rng(5)
        for _ in range(30):
            x = (rng.standard_normal((37, 7)) * 4 + 2).astype(np.float32)
            fast.predict_learn(x, (x[:, 0] > 2).astype(np.int64) + (x[:, 1] > 2))
        trained.append(fast)
    a, b = trained
    for p, q in zip(a.module.parameters(), b.module.parameters(), strict=True):
        assert torch.equal(p, q)
    assert a.scaler.mean.tobytes() == b.scaler.mean.tobytes()
    x = np.random.default_rng(6).standard_normal((50, 7)).astype(np.float32)
    assert a.predict(x)[1].tobytes() == b.predict(x)[1].tobytes()


def test_bad_labels_and_shapes_are_clear_errors_and_change_nothing(backend):
    fast = learner("fused", standardize=True)
    x, y = next(batches(1))
    fast.learn(x, y)
    before = [p.detach().clone() for p in fast.module.parameters()]
    moments = fast.scaler.n, fast.scaler.mean.copy()
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\), got \[7\]"):
        fast.learn(x, np.where(np.arange(len(y)) == 5, 7, y))
    with pytest.raises(ValueError, match="class indices"):
        fast.learn(x, np.full(len(y), -1))
    with pytest.raises(ValueError, match="features"):
        fused_kernel(fast).forward_backward(x[:, :2], y, 1.0)
    with pytest.raises(ValueError, match="labels"):
        fused_kernel(fast).forward_backward(x, y[:3], 1.0)
    with pytest.raises(ValueError, match="scaler must have seen two rows"):  # an empty one
        fused_kernel(fast).forward_backward(x, y, 1.0, fast.scaler.__class__(), fold=len(x))
    other = fast.scaler.__class__()
    other.update(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="scaler must have seen two rows of 5 features"):
        fused_kernel(fast).forward_backward(x, y, 1.0, other, fold=len(x))
    for p, q in zip(before, fast.module.parameters(), strict=True):
        assert torch.equal(p, q)
    assert (fast.scaler.n, fast.scaler.mean.tolist()) == (moments[0], moments[1].tolist())


def test_without_a_compiler_the_kernels_are_absent_and_numpy_takes_over(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(RuntimeError, match="cannot run the C compiler"):
        native.build(directory=tmp_path)
    monkeypatch.setenv("CC", "false")  # runs, and fails
    with pytest.raises(RuntimeError, match="false failed on mlp_kernel.c"):
        native.build(directory=tmp_path)
    assert not list(tmp_path.glob("*.so"))  # nothing half-written is left
    monkeypatch.setattr(native, "mlp_library", lambda: None)
    module = MLPClassifier(3, (4,), 2)
    kernel = FusedMLP(mlp_linears(module), torch.optim.Adam(module.parameters()))
    assert kernel.io is None
    with pytest.raises(RuntimeError, match="unavailable"):
        FusedMLP(mlp_linears(module), torch.optim.Adam(module.parameters()), use_native=True)


def test_predict_learn_is_predict_then_learn():
    together, apart = learner("fused", standardize=True), learner("fused", standardize=True)
    for x, y in batches(20):
        pred, conf, loss = together.predict_learn(x, y)
        pred2, conf2 = apart.predict(x)
        np.testing.assert_array_equal(pred, pred2)
        np.testing.assert_allclose(conf, conf2, rtol=1e-6)
        assert loss == apart.learn(x, y)
    assert together.steps == apart.steps == 20


def test_module_keeps_the_trained_weights():
    fast = learner("fused")
    before = {k: v.clone() for k, v in fast.module.state_dict().items()}
    for x, y in batches(5):
        fast.learn(x, y)
    after = fast.module.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in before)
    x, _ = next(batches(1, seed=4))
    with torch.inference_mode():
        direct = fast.module(torch.from_numpy(x)).argmax(1).numpy()
    np.testing.assert_array_equal(direct, fast.predict(x)[0])


@pytest.mark.parametrize(
    ("module", "fits"),
    [
        (MLPClassifier(3, (4,), 2), True),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), True),
        (nn.Sequential(nn.Linear(3, 2)), True),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), False),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)), False),
        (nn.Sequential(nn.Linear(3, 2, bias=False)), False),
        (nn.Sequential(nn.Linear(3, 2)).double(), False),
    ],
)
def test_which_modules_the_kernel_takes(module, fits):
    assert (mlp_linears(module) is not None) == fits
    auto = IncrementalLearner(module, LearnerConfig(kernel="auto"))
    assert isinstance(auto.backend, FusedBackend) == fits
    if not fits:
        with pytest.raises(ValueError, match="kernel='fused' needs"):
            IncrementalLearner(module, LearnerConfig(kernel="fused"))


def test_optimizers_the_kernel_cannot_reproduce_fall_back_to_autograd():
    from model.learn.fused import optimizer_supported

    params = list(MLPClassifier(3, (4,), 2).parameters())
    assert optimizer_supported(torch.optim.Adam(params, lr=0.1))
    assert optimizer_supported(torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert not optimizer_supported(torch.optim.Adam(params, lr=0.1, amsgrad=True))
    assert not optimizer_supported(torch.optim.AdamW(params, lr=0.1))
    assert not optimizer_supported(torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True))
    frozen = MLPClassifier(3, (4,), 2)
    frozen.net[0].weight.requires_grad_(False)
    assert mlp_linears(frozen) is None


@pytest.mark.parametrize(
    "cfg",
    [
        dict(optimizer="adam", standardize=True),
        dict(optimizer="adam", standardize=False, lr=0.003),
        dict(optimizer="sgd", momentum=0.9, standardize=True),
        dict(optimizer="sgd", standardize=False),
    ],
    ids=["adam-scaled", "adam", "sgd-momentum-scaled", "sgd"],
)
@pytest.mark.parametrize("step_rows", [1, 3])
def test_the_c_step_loop_gives_the_python_loops_bits(monkeypatch, cfg, step_rows):
    # learn_steps runs the per-step loop in one C call where it can: the same
    # predictions, weights, optimizer state and scaling as the loop from Python
    from model.learn.learner import dumps_state

    def learner():
        return IncrementalLearner(
            MLPClassifier(5, (7,), num_classes=3, seed=3), LearnerConfig(seed=0, **cfg)
        )

    rng = np.random.default_rng(4)
    batches = [rng.standard_normal((n, 5)).astype(np.float32) * 3 + 1 for n in (1, 2, 9, 40, 17)]
    labels = [(x[:, 0] > x[:, 1]).astype(np.int64) + (x[:, 2] > 2) for x in batches]
    fast, slow = learner(), learner()
    assert isinstance(fast.backend, FusedBackend) and fast.backend.kernel.io is not None
    calls = []
    original = FusedBackend.learn_steps
    monkeypatch.setattr(FusedBackend, "learn_steps", lambda *a: calls.append(1) or original(*a))
    for x, y in zip(batches, labels, strict=True):
        got = fast.learn_steps(x, y, step_rows)
        want = [slow.predict_learn(x[i : i + step_rows], y[i : i + step_rows]) for i in
                range(0, len(x), step_rows)]  # fmt: skip
        assert got is not None
        np.testing.assert_array_equal(got[0], np.concatenate([w[0] for w in want]))
        np.testing.assert_array_equal(got[1], np.concatenate([w[1] for w in want]))
    assert calls  # the C loop ran (after the first steps that start the optimizer)
    assert (fast.samples, fast.steps, fast.batches) == (slow.samples, slow.steps, slow.batches)
    assert dumps_state(fast.snapshot()) == dumps_state(slow.snapshot())


def test_the_c_step_loop_refuses_bad_labels_and_changes_nothing():
    from model.learn.learner import dumps_state

    learner = IncrementalLearner(MLPClassifier(2, (4,), seed=0), LearnerConfig(standardize=True))
    x = np.ones((8, 2), np.float32) * np.arange(8, dtype=np.float32)[:, None]
    learner.learn_steps(x, np.zeros(8, np.int64), 1)
    before = dumps_state(learner.snapshot())
    with pytest.raises(ValueError, match="class indices"):
        learner.learn_steps(x, np.array([0, 1, 0, 5, 0, 1, 0, 1]), 1)
    assert dumps_state(learner.snapshot()) == before
