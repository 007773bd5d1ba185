"""Each controller's response to a step change in memory and to an out-of-memory error."""

from __future__ import annotations

import pytest

from model.backpressure import (
    AIMD,
    STRATEGIES,
    Accumulating,
    Controller,
    CreditBased,
    FixedSize,
    PIDHeadroom,
    Unbounded,
    make_controller,
)
from model.memory import MemoryReading

BUDGET = 100_000


def _run(
    controller: Controller, steps: int, per_cost: list[float], costs: list[float]
) -> list[tuple[int, int]]:
    """Feeds a simulated step whose peak is 1000 + per_cost[t] * cost; (size, peak)."""
    out = []
    for t in range(steps):
        size = controller.next_size(costs[t : t + 400] or [1.0])
        cost = sum(costs[t : t + size]) if costs[t : t + size] else float(size)
        peak = int(1000 + per_cost[t] * cost)
        controller.observe(size, cost, MemoryReading(peak, peak, BUDGET))
        out.append((size, peak))
    return out


def _step_change(steps: int = 120, at: int = 60) -> list[float]:
    return [500.0 if t < at else 2000.0 for t in range(steps)]


@pytest.mark.parametrize("make", [lambda: AIMD(BUDGET), lambda: PIDHeadroom(BUDGET)])
def test_reactive_controllers_settle_under_budget_after_a_step_change(make) -> None:
    controller = make()
    trace = _run(controller, 120, _step_change(), [1.0] * 600)
    before, after = trace[40:60], trace[90:]
    assert max(size for size, _ in before) > 100  # grew towards 198 fitting samples
    assert all(peak <= BUDGET * 1.05 for _, peak in before[-5:])
    over_after = [peak for _, peak in after if peak > BUDGET]
    assert len(over_after) <= 3  # an AIMD saw-tooth touches the budget now and then
    assert max(size for size, _ in after) < 60  # it followed the 4x change down


def test_pid_holds_headroom_near_its_set_point() -> None:
    controller = PIDHeadroom(BUDGET, setpoint=0.25)
    trace = _run(controller, 150, [500.0] * 150, [1.0] * 600)
    headroom = [1 - peak / BUDGET for _, peak in trace[-20:]]
    assert 0.15 <= sum(headroom) / len(headroom) <= 0.35


def test_credit_based_admits_what_fits_and_probes_unseen_sizes() -> None:
    controller = CreditBased(BUDGET, margin=0.1)
    costs = [10.0] * 300 + [100.0] * 300  # a burst: samples 10x longer
    trace = _run(controller, 200, [50.0] * 200, costs)
    assert trace[0][0] == 1  # nothing measured yet: a probe
    assert all(peak <= BUDGET for _, peak in trace)  # no violation, burst included
    sizes = [size for size, _ in trace[5:]]
    # 178 fit in 90% of the budget; 400 waiting take 3 micro-batches of 134
    assert max(sizes) >= 130
    assert controller.probes >= 1


def test_credit_based_reacts_to_a_step_change_in_bytes_per_cost() -> None:
    controller = CreditBased(BUDGET)
    trace = _run(controller, 120, _step_change(), [1.0] * 600)
    over = [t for t, (_, peak) in enumerate(trace) if peak > BUDGET]
    assert all(60 <= t <= 61 for t in over)  # at most the step that saw the change
    assert all(peak <= BUDGET for _, peak in trace[62:])


@pytest.mark.parametrize(
    "make",
    [
        lambda: AIMD(BUDGET, initial=64),
        lambda: PIDHeadroom(BUDGET, initial=64),
        lambda: CreditBased(BUDGET),
    ],
)
def test_an_out_of_memory_error_shrinks_the_next_micro_batch(make) -> None:
    controller = make()
    controller.observe(64, 64.0, MemoryReading(10_000, 10_000, BUDGET))
    before = controller.next_size([1.0] * 1000)
    controller.on_oom(before, float(before))
    after = controller.next_size([1.0] * 1000)
    assert after <= before // 2


def test_unbounded_and_fixed_ignore_memory() -> None:
    assert Unbounded().next_size([1.0] * 500) == 500
    fixed = FixedSize(32)
    fixed.on_oom(32, 32.0)
    assert fixed.next_size([1.0] * 500) == 32
    assert fixed.next_size([1.0] * 5) == 5


@pytest.mark.parametrize(
    "make",
    [
        lambda: AIMD(BUDGET),
        lambda: PIDHeadroom(BUDGET),
        lambda: CreditBased(BUDGET),
        lambda: Accumulating(CreditBased(BUDGET)),
    ],
)
def test_snapshot_restore_continues_exactly(make) -> None:
    a, b = make(), make()
    costs = [float(1 + t % 7) for t in range(600)]
    _run(a, 30, [300.0] * 30, costs)
    b.restore(a.snapshot())
    assert _run(a, 30, [900.0] * 30, costs) == _run(b, 30, [900.0] * 30, costs)


def test_accumulating_wraps_and_names() -> None:
    controller = make_controller("accumulate", BUDGET)
    assert controller.accumulate and controller.describe() == "accumulate(credit)"
    assert not make_controller("credit", BUDGET).accumulate
    assert {make_controller(s, BUDGET).name for s in STRATEGIES} == set(STRATEGIES)


def test_bad_configuration_is_named() -> None:
    with pytest.raises(ValueError, match="one of"):
        make_controller("lifo", BUDGET)
    with pytest.raises(ValueError, match="needs a memory budget"):
        make_controller("pid", None)
    with pytest.raises(ValueError, match="decrease"):
        AIMD(BUDGET, decrease=1.5)
    with pytest.raises(ValueError, match="size must be an int"):
        FixedSize(0)
    with pytest.raises(ValueError, match="margin"):
        CreditBased(BUDGET, margin=1.0)
