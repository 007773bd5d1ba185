"""A memory budget and the signals that say how close a step comes to it.

One interface, :class:`MemorySignal`, on every device, so the same controller
(:mod:`model.backpressure`) runs on a GPU and on the CPU where CI runs:

- :class:`CudaMemory`: the CUDA caching allocator's own figures
  (``torch.cuda.memory_allocated``, ``max_memory_allocated``, ``memory_reserved``,
  ``mem_get_info``), with an optional hard cap per step through
  ``torch.cuda.set_per_process_memory_fraction``: above it the allocator raises
  ``torch.OutOfMemoryError``.
- :class:`AllocatorMemory`: the CPU analogue of the CUDA allocator's figures. A small
  C++ allocator (:file:`cpu_allocator.cpp`, compiled on first use like the C kernels,
  :mod:`model.learn.native`) is installed as PyTorch's CPU allocator: it hands every
  request to c10's own ``alloc_cpu`` and counts the bytes in use and their peak, per
  allocating thread, with atomics; so a step's every tensor allocation is *measured*
  (activations, what autograd saves, gradients, an operator's temporaries), and steps
  in other threads do not disturb it. With ``cap_bytes`` it refuses the allocation
  that would take a step over the cap with ``torch.OutOfMemoryError``, as the CUDA
  allocator does, so one out-of-memory path serves both devices. Once built it stays
  PyTorch's CPU allocator for the rest of the process.
- :class:`TensorMemory`: the same figures without a compiler, slower: while a step
  runs, a ``TorchDispatchMode`` counts the bytes of each new storage an operator
  returns (not a view or in-place result of its inputs), and a weak reference frees
  them when the storage dies (it sees operators' outputs, not their temporaries).
- :class:`ProcessMemory`: the process's resident set from ``/proc`` (current and peak),
  for the host side: a long run must not grow beyond one budget.

>>> import torch
>>> signal = memory_signal("cpu", budget_bytes=1 << 20)
>>> with signal.step():
...     x = torch.ones(1024, 64)  # 256 KiB
...     y = x * 2                 # another 256 KiB while both live
>>> reading = signal.reading()
>>> reading.peak_bytes >= 2 * 1024 * 64 * 4, reading.over_budget
(True, False)
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

log = logging.getLogger(__name__)
ALLOCATOR_SOURCE = Path(__file__).with_name("cpu_allocator.cpp")
_ALLOCATOR_SIGNATURES = {
    "sml_install": (ctypes.c_int, []),
    "sml_current": (ctypes.c_int64, []),
    "sml_peak": (ctypes.c_int64, []),
    "sml_reset_peak": (None, []),
    "sml_set_cap": (None, [ctypes.c_int64]),
}


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
    allocator refuses. A step and its reading belong to the thread that runs it: one
    signal may serve steps in several threads at once.
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        if budget_bytes is not None and budget_bytes <= 0:
            msg = f"budget_bytes must be > 0 or None, got {budget_bytes!r}"
            raise ValueError(msg)
        self.budget_bytes = budget_bytes
        self._local = threading.local()  # this thread's step in progress and last reading

    @contextmanager
    def step(self) -> Iterator[MemorySignal]:
        self._begin()
        try:
            yield self
        finally:
            self._local.last = self._end()

    def reading(self) -> MemoryReading:
        """The figures of this thread's last completed (or failed) step."""
        last = getattr(self._local, "last", None)
        return last if last is not None else MemoryReading(0, 0, self.budget_bytes)

    def _begin(self) -> None:
        raise NotImplementedError

    def _end(self) -> MemoryReading:
        raise NotImplementedError


class NoSignal(MemorySignal):
    """Measures nothing (no budget): for passes sized by other means."""

    def _begin(self) -> None:
        return

    def _end(self) -> MemoryReading:
        return MemoryReading(0, 0, None)


class _AllocationCounter(TorchDispatchMode):
    """Counts the bytes of every storage an operator creates while it is active."""

    def __init__(self, cap_bytes: int | None) -> None:
        super().__init__()
        self.cap_bytes = cap_bytes
        self.live: dict[int, int] = {}
        self.used = 0
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = [out] if isinstance(out, torch.Tensor) else pytree.tree_leaves(out)
        inputs: set[int] | None = None
        for leaf in outputs:
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                if inputs is None:  # a view or an in-place result shares an input's storage
                    inputs = {
                        t.untyped_storage().data_ptr()
                        for t in pytree.tree_leaves((args, kwargs))
                        if isinstance(t, torch.Tensor) and t.device.type == "cpu"
                    }
                self._note(leaf, inputs)
        return out

    def _note(self, tensor: torch.Tensor, inputs: set[int]) -> None:
        storage = tensor.untyped_storage()
        nbytes = storage.nbytes()
        key = storage.data_ptr()
        if nbytes == 0 or key in self.live or key in inputs:
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

    def _begin(self) -> None:
        counter = _AllocationCounter(self.cap_bytes)
        counter.__enter__()  # a dispatch mode is the thread's own
        self._local.counter = counter

    def _end(self) -> MemoryReading:
        counter = self._local.counter
        counter.__exit__(None, None, None)
        self._local.counter = None
        return MemoryReading(counter.used, counter.peak, self.budget_bytes)


def counting_allocator() -> ctypes.CDLL | None:
    """The counting CPU allocator, built, loaded and installed once per process; None
    without a C++ compiler, when the build fails, or with ``SML_NATIVE=0`` (the reason
    is logged once)."""
    global _ALLOCATOR, _ALLOCATOR_TRIED
    with _ALLOCATOR_LOCK:
        if not _ALLOCATOR_TRIED:
            _ALLOCATOR_TRIED = True
            _ALLOCATOR = _install_allocator()
        return _ALLOCATOR


_ALLOCATOR: ctypes.CDLL | None = None
_ALLOCATOR_TRIED = False
_ALLOCATOR_LOCK = threading.Lock()


def _install_allocator() -> ctypes.CDLL | None:
    if os.environ.get("SML_NATIVE", "1") == "0":
        return None
    from model.learn import native  # here: model.learn imports the handler, which us

    here = Path(torch.__file__).parent
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = (
        "-O2",
        "-shared",
        "-fPIC",
        "-std=c++17",
        f"-I{here / 'include'}",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-DSML_TORCH_VERSION={torch.__version__}",  # a new torch, a new build
    )
    link = (f"-L{here / 'lib'}", "-lc10", f"-Wl,-rpath,{here / 'lib'}")
    try:
        path = native.build(ALLOCATOR_SOURCE, flags=flags, cxx=True, link=link)
        lib = native.load(path, _ALLOCATOR_SIGNATURES)
    except (OSError, RuntimeError) as err:
        log.warning("counting CPU allocator unavailable, using TensorMemory: %s", err)
        return None
    if not lib.sml_install():
        log.warning("PyTorch kept another CPU allocator; using TensorMemory")
        return None
    return lib


class AllocatorMemory(MemorySignal):
    """The counting CPU allocator's figures for one step (see the module doc).

    They are the thread's: what the thread running the step allocates (whoever frees
    it later), so steps in other threads neither add to nor reset them.
    ``used_bytes`` and ``peak_bytes`` are relative to the bytes the thread held when
    the step began; ``cap_bytes`` caps what the step may add to them.
    """

    def __init__(self, budget_bytes: int | None = None, *, cap_bytes: int | None = None) -> None:
        super().__init__(budget_bytes)
        if cap_bytes is not None and cap_bytes <= 0:
            msg = f"cap_bytes must be > 0 or None, got {cap_bytes!r}"
            raise ValueError(msg)
        lib = counting_allocator()
        if lib is None:
            msg = "the counting CPU allocator is not available (see counting_allocator)"
            raise RuntimeError(msg)
        self._lib = lib
        self.cap_bytes = cap_bytes

    def in_use(self) -> int:
        """Bytes of CPU tensors this thread's allocations hold now."""
        return int(self._lib.sml_current())

    def _begin(self) -> None:
        base = int(self._lib.sml_current())
        self._local.base = base
        self._lib.sml_reset_peak()
        if self.cap_bytes is not None:
            self._lib.sml_set_cap(base + self.cap_bytes)

    def _end(self) -> MemoryReading:
        base = self._local.base
        self._lib.sml_set_cap(-1)
        return MemoryReading(
            used_bytes=int(self._lib.sml_current()) - base,
            peak_bytes=max(0, int(self._lib.sml_peak()) - base),
            budget_bytes=self.budget_bytes,
        )


class CudaMemory(MemorySignal):
    """The CUDA allocator's figures for one device and one step.

    ``cap_bytes`` caps what a step may add to the memory allocated when it began:
    for the step, ``torch.cuda.set_per_process_memory_fraction`` is set to that total
    (the caching allocator then frees cached blocks or raises
    ``torch.OutOfMemoryError``), and put back afterwards. The fraction limits what the
    allocator *reserves* (cached blocks included), so with a fragmented cache the
    refusal may come a little before the cap. The allocator's peak and the fraction
    are the device's, so the measured steps of a process take turns on a device (a
    lock per device): each reads only its own.
    """

    def __init__(
        self,
        device: torch.device | str = "cuda",
        budget_bytes: int | None = None,
        *,
        cap_bytes: int | None = None,
    ) -> None:
        super().__init__(budget_bytes)
        self.device = torch.device(device)
        if self.device.type != "cuda":
            msg = f"CudaMemory needs a CUDA device, got {self.device!r}"
            raise ValueError(msg)
        if cap_bytes is not None and cap_bytes <= 0:
            msg = f"cap_bytes must be > 0 or None, got {cap_bytes!r}"
            raise ValueError(msg)
        self.cap_bytes = cap_bytes
        self._base = 0
        self._fraction = 1.0

    def _begin(self) -> None:
        _device_lock(self.device).acquire()
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._base = torch.cuda.memory_allocated(self.device)
        if self.cap_bytes is not None:
            getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
            self._fraction = float(getter(self.device)) if getter else 1.0
            total = torch.cuda.get_device_properties(self.device).total_memory
            fraction = min(1.0, (self._base + self.cap_bytes) / total)
            torch.cuda.set_per_process_memory_fraction(fraction, self.device)

    def _end(self) -> MemoryReading:
        try:
            torch.cuda.synchronize(self.device)
            if self.cap_bytes is not None:
                torch.cuda.set_per_process_memory_fraction(self._fraction, self.device)
            free, _total = torch.cuda.mem_get_info(self.device)
            return MemoryReading(
                used_bytes=torch.cuda.memory_allocated(self.device) - self._base,
                peak_bytes=torch.cuda.max_memory_allocated(self.device) - self._base,
                budget_bytes=self.budget_bytes,
                reserved_bytes=torch.cuda.memory_reserved(self.device),
                free_bytes=free,
            )
        finally:
            _device_lock(self.device).release()


_DEVICE_LOCKS: dict[str, threading.Lock] = {}


def _device_lock(device: torch.device) -> threading.Lock:
    with _ALLOCATOR_LOCK:
        return _DEVICE_LOCKS.setdefault(str(device), threading.Lock())


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
    """The signal for ``device``: :class:`CudaMemory` on CUDA, :class:`AllocatorMemory`
    on the CPU, or
    :class:`TensorMemory` where the counting allocator cannot be built."""
    device = torch.device(device)
    if device.type == "cuda":
        return CudaMemory(device, budget_bytes, cap_bytes=cap_bytes)
    if counting_allocator() is not None:
        return AllocatorMemory(budget_bytes, cap_bytes=cap_bytes)
    return TensorMemory(budget_bytes, cap_bytes=cap_bytes)
