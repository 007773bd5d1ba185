"""A memory budget and the signals that say how close a step comes to it.

One interface, :class:`MemorySignal`, on every device, so the same controller
(:mod:`model.backpressure`) runs on a GPU and on the CPU where CI runs:

- :class:`CudaMemory`: the CUDA caching allocator's own figures
  (``torch.cuda.memory_allocated``, ``max_memory_allocated``, ``memory_reserved``,
  ``mem_get_info``), with an optional hard cap through
  ``torch.cuda.set_per_process_memory_fraction``: above it the allocator raises
  ``torch.OutOfMemoryError``.
- :class:`TensorMemory`: the CPU analogue of ``max_memory_allocated``. While a step
  runs, a ``TorchDispatchMode`` sees every operator's outputs and counts the bytes of
  each new storage once; a weak reference frees them again when the storage dies. So
  the peak is *measured*, from the allocations the step really makes (activations,
  the tensors autograd saves, gradients, temporaries), not estimated from shapes. With
  ``cap_bytes`` it raises ``torch.OutOfMemoryError`` at the allocation that crosses the
  cap, as the CUDA allocator does, so one out-of-memory path serves both devices.
- :class:`ProcessMemory`: the process's resident set from ``/proc`` (current and peak),
  for the host side: a long run must not grow beyond one budget.

>>> import torch
>>> signal = TensorMemory(budget_bytes=1 << 20)
>>> with signal.step():
...     x = torch.ones(1024, 64)  # 256 KiB
...     y = x * 2                 # another 256 KiB while both live
>>> reading = signal.reading()
>>> reading.peak_bytes >= 2 * 1024 * 64 * 4, reading.over_budget
(True, False)
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class MemoryReading:
    """What one step used: bytes live at its end, its peak, and the budget.

    ``headroom`` is the fraction of the budget the peak left free (negative when the
    step went over it).
    """

    used_bytes: int
    peak_bytes: int
    budget_bytes: int | None
    reserved_bytes: int = 0
    free_bytes: int | None = None

    @property
    def over_budget(self) -> bool:
        return self.budget_bytes is not None and self.peak_bytes > self.budget_bytes

    @property
    def headroom(self) -> float:
        if not self.budget_bytes:
            return 1.0
        return 1.0 - self.peak_bytes / self.budget_bytes


def is_out_of_memory(error: BaseException) -> bool:
    """True for an allocator's out-of-memory error (CUDA's, or a :class:`TensorMemory`
    cap's, both ``torch.OutOfMemoryError``)."""
    return isinstance(error, torch.OutOfMemoryError)


class MemorySignal:
    """Measures the memory of one step at a time against ``budget_bytes``.

    Use ``with signal.step(): ...`` around the work, then :meth:`reading`. A budget is
    what a controller aims under; a cap (where the signal has one) is where the
    allocator refuses.
    """

    device_type = "cpu"

    def __init__(self, budget_bytes: int | None = None) -> None:
        if budget_bytes is not None and budget_bytes <= 0:
            msg = f"budget_bytes must be > 0 or None, got {budget_bytes!r}"
            raise ValueError(msg)
        self.budget_bytes = budget_bytes
        self._last = MemoryReading(0, 0, budget_bytes)

    @contextmanager
    def step(self) -> Iterator[MemorySignal]:
        self._begin()
        try:
            yield self
        finally:
            self._last = self._end()

    def reading(self) -> MemoryReading:
        """The figures of the last completed (or failed) step."""
        return self._last

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self) -> MemoryReading:
        raise NotImplementedError


class _AllocationCounter(TorchDispatchMode):
    """Counts the bytes of every storage an operator creates while it is active."""

    def __init__(self, cap_bytes: int | None) -> None:
        super().__init__()
        self.cap_bytes = cap_bytes
        self.live: dict[int, int] = {}
        self.used = 0
        self.peak = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: Any = (), kwargs: Any = None
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                self._note(leaf)
        return out

    def _note(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        key = storage.data_ptr()
        if nbytes == 0 or key in self.live:
            return
        self.live[key] = nbytes
        self.used += nbytes
        self.peak = max(self.peak, self.used)
        weakref.finalize(storage, self._free, key, nbytes)
        if self.cap_bytes is not None and self.used > self.cap_bytes:
            msg = (
                f"step allocated {self.used} bytes of tensors, over the cap of "
                f"{self.cap_bytes} bytes (TensorMemory)"
            )
            raise torch.OutOfMemoryError(msg)

    def _free(self, key: int, nbytes: int) -> None:
        if self.live.get(key) == nbytes:
            del self.live[key]
            self.used -= nbytes


class TensorMemory(MemorySignal):
    """CPU tensor bytes a step allocates, measured per operator (see the module doc).

    ``used_bytes`` is what the step's allocations still hold at its end (outputs,
    gradients it left); ``peak_bytes`` the most they held at once. Tensors that existed
    before the step (parameters, inputs) are not counted: the budget is for the step.
    """

    def __init__(self, budget_bytes: int | None = None, *, cap_bytes: int | None = None) -> None:
        super().__init__(budget_bytes)
        if cap_bytes is not None and cap_bytes <= 0:
            msg = f"cap_bytes must be > 0 or None, got {cap_bytes!r}"
            raise ValueError(msg)
        self.cap_bytes = cap_bytes
        self._counter: _AllocationCounter | None = None

    def _begin(self) -> None:
        self._counter = _AllocationCounter(self.cap_bytes)
        self._counter.__enter__()

    def _end(self) -> MemoryReading:
        counter = self._counter
        assert counter is not None
        counter.__exit__(None, None, None)
        self._counter = None
        return MemoryReading(counter.used, counter.peak, self.budget_bytes)


class CudaMemory(MemorySignal):
    """The CUDA allocator's figures for one device; ``cap_fraction`` sets a hard cap."""

    device_type = "cuda"

    def __init__(
        self,
        device: torch.device | str = "cuda",
        budget_bytes: int | None = None,
        *,
        cap_fraction: float | None = None,
    ) -> None:
        super().__init__(budget_bytes)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            msg = f"CudaMemory needs a CUDA device, got {self.device!r}"
            raise ValueError(msg)
        if cap_fraction is not None:
            if not 0 < cap_fraction <= 1:
                msg = f"cap_fraction must be in (0, 1], got {cap_fraction!r}"
                raise ValueError(msg)
            torch.cuda.set_per_process_memory_fraction(cap_fraction, self.device)
        self.cap_fraction = cap_fraction
        self._base = 0

    def _begin(self) -> None:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)

    def _end(self) -> MemoryReading:
        torch.cuda.synchronize(self.device)
        free, _total = torch.cuda.mem_get_info(self.device)
        return MemoryReading(
            used_bytes=torch.cuda.memory_allocated(self.device) - self._base,
            peak_bytes=torch.cuda.max_memory_allocated(self.device) - self._base,
            budget_bytes=self.budget_bytes,
            reserved_bytes=torch.cuda.memory_reserved(self.device),
            free_bytes=free,
        )


class ProcessMemory(MemorySignal):
    """The resident set of this process (``/proc/self/status``): current and peak.

    The peak (``VmHWM``) is reset at each step's start through ``/proc/self/clear_refs``
    where the kernel allows it; otherwise it is the peak since the process started.
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        super().__init__(budget_bytes)
        self._base = 0

    def _begin(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
        self._base = 0

    def _end(self) -> MemoryReading:
        rss, hwm = resident_bytes()
        return MemoryReading(rss, max(rss, hwm), self.budget_bytes)


def resident_bytes() -> tuple[int, int]:
    """(current, peak) resident set of this process in bytes, from ``/proc``."""
    rss = hwm = 0
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:  # not Linux: fall back to the peak getrusage reports
        import resource

        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss = hwm
    return rss, hwm


def memory_signal(
    device: torch.device | str,
    budget_bytes: int | None = None,
    *,
    cap_bytes: int | None = None,
) -> MemorySignal:
    """The signal for ``device``: :class:`CudaMemory` on CUDA (a cap becomes the
    matching memory fraction), :class:`TensorMemory` elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        fraction = None
        if cap_bytes is not None:
            total = torch.cuda.get_device_properties(device).total_memory
            fraction = min(1.0, cap_bytes / total)
        return CudaMemory(device, budget_bytes, cap_fraction=fraction)
    return TensorMemory(budget_bytes, cap_bytes=cap_bytes)
