"""The memory signals: the CPU one moves when a step allocates, and caps refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.memory import (
    AllocatorMemory,
    CudaMemory,
    MemoryReading,
    ProcessMemory,
    TensorMemory,
    counting_allocator,
    is_out_of_memory,
    memory_signal,
)

needs_allocator = pytest.mark.skipif(
    counting_allocator() is None, reason="no C++ compiler for the counting allocator"
)
CPU_SIGNALS = [pytest.param(AllocatorMemory, marks=needs_allocator), TensorMemory]


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_cpu_signal_moves_when_a_step_allocates(kind) -> None:
    signal = kind(budget_bytes=1 << 30)
    with signal.step():
        pass
    assert signal.reading().peak_bytes == 0
    with signal.step():
        x = torch.ones(256, 1024)  # 1 MiB
        y = x + 1  # another MiB
        del x
    reading = signal.reading()
    assert reading.peak_bytes >= 2 << 20
    assert reading.used_bytes == y.untyped_storage().nbytes()  # x was freed inside


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_views_share_their_storage_and_count_once(kind) -> None:
    signal = kind()
    with signal.step():
        x = torch.zeros(1024, 256)
        views = [x[i] for i in range(10)] + [x.t(), x.view(-1)]
    assert signal.reading().peak_bytes == x.untyped_storage().nbytes()
    del views


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_a_training_step_peak_grows_with_the_batch(kind) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))
    signal = kind()
    peaks = []
    for rows in (16, 64, 256):
        with signal.step():
            model(torch.randn(rows, 32)).pow(2).mean().backward()
        peaks.append(signal.reading().peak_bytes)
        model.zero_grad(set_to_none=True)
    assert peaks[0] < peaks[1] < peaks[2]


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_a_cap_refuses_like_an_allocator(kind) -> None:
    signal = kind(budget_bytes=1 << 20, cap_bytes=1 << 20)
    with pytest.raises(torch.OutOfMemoryError) as info, signal.step():
        kept = torch.ones(128, 1024)  # 512 KiB fits
        torch.ones(512, 1024)  # 2 MiB more does not
    assert is_out_of_memory(info.value)
    assert not is_out_of_memory(RuntimeError("other"))
    assert signal.reading().peak_bytes >= 512 << 10
    torch.ones(512, 1024)  # outside a step nothing refuses
    del kept


@needs_allocator
def test_the_allocator_sees_temporaries_and_frees() -> None:
    signal = AllocatorMemory()
    before = signal.in_use()
    with signal.step():
        x = torch.randn(256, 256)
        for _ in range(3):
            x = torch.tanh(x @ x)  # each product a new temporary, the old one freed
    reading = signal.reading()
    assert reading.used_bytes == x.untyped_storage().nbytes()
    assert reading.peak_bytes >= 2 * 256 * 256 * 4
    del x
    assert signal.in_use() == before


def test_reading_headroom_and_over_budget() -> None:
    assert MemoryReading(0, 750, 1000).headroom == pytest.approx(0.25)
    assert not MemoryReading(0, 1000, 1000).over_budget
    assert MemoryReading(0, 1001, 1000).over_budget
    assert MemoryReading(0, 10**9, None).headroom == 1.0


def test_process_memory_sees_the_resident_set_grow() -> None:
    signal = ProcessMemory()
    with signal.step():
        pass
    before = signal.reading().used_bytes
    with signal.step():
        block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB, touched
    assert before > 0
    assert signal.reading().peak_bytes >= before + (32 << 20)
    del block


def test_factory_and_validation() -> None:
    expected = AllocatorMemory if counting_allocator() is not None else TensorMemory
    assert isinstance(memory_signal("cpu", 100), expected)
    with pytest.raises(ValueError, match="budget_bytes must be > 0"):
        TensorMemory(0)
    with pytest.raises(ValueError, match="cap_bytes"):
        TensorMemory(cap_bytes=-1)
    with pytest.raises(ValueError, match="needs a CUDA device"):
        CudaMemory("cpu")


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_views_and_in_place_results_of_older_tensors_cost_nothing(kind) -> None:
    big = torch.zeros(1024, 1024)  # 4 MiB, before the step
    signal = kind()
    with signal.step():
        part = big[:10]
        big.add_(1)
    assert signal.reading().peak_bytes < 1 << 20
    del part


@pytest.mark.parametrize("kind", CPU_SIGNALS)
def test_steps_in_two_threads_read_their_own_figures(kind) -> None:
    import threading

    signal = kind(cap_bytes=8 << 20)
    inside, done = threading.Event(), threading.Event()
    readings = {}

    def large() -> None:
        with signal.step():
            x = torch.ones(1024, 1024)  # 4 MiB, held while the other step runs
            inside.set()
            done.wait(10)
            del x
        readings["large"] = signal.reading()

    def small() -> None:
        inside.wait(10)
        with signal.step():
            torch.ones(256, 1024)  # 1 MiB
        readings["small"] = signal.reading()
        done.set()

    threads = [threading.Thread(target=large), threading.Thread(target=small)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert readings["large"].peak_bytes >= 4 << 20
    assert readings["small"].peak_bytes < 2 << 20
