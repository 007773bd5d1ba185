"""Device selection and host-to-device staging.

>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import re

import torch

_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(spec: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N`` to a ``torch.device``; unknown strings are an error.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA where there is none
    (or for a GPU index that does not exist) raises instead of silently using the CPU.
    """
    if not isinstance(spec, str) or not _DEVICE_RE.match(spec.strip().lower()):
        msg = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}"
        raise ValueError(msg)
    name = spec.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            msg = f"device {spec!r} requested but CUDA is not available"
            raise ValueError(msg)
        if device.index is not None and device.index >= torch.cuda.device_count():
            msg = f"device {spec!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            raise ValueError(msg)
    return device


class HostStaging:
    """Moves CPU batches to ``device`` through one reusable (pinned, on CUDA) buffer.

    On CUDA the buffer is page-locked so the copy to the GPU can be asynchronous
    (``non_blocking=True``); it grows to the largest batch seen and is reused, so no
    pinned allocation happens per batch. With ``pin=False`` (CPU) the same code path
    runs with an ordinary buffer (``always=True``), which is how CI exercises it
    without a GPU. On CPU it is otherwise a no-op.
    """

    def __init__(
        self, device: torch.device, *, pin: bool | None = None, always: bool = False
    ) -> None:
        self.device = device
        self.pin = device.type == "cuda" if pin is None else pin
        self.active = always or device.type == "cuda"
        self._buffer: torch.Tensor | None = None
        self.allocations = 0

    def to_device(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        rows = x.shape[0]
        buf = self._buffer
        if (
            buf is None
            or buf.shape[0] < rows
            or buf.shape[1:] != x.shape[1:]
            or buf.dtype != x.dtype
        ):
            capacity = max(rows, 0 if buf is None else buf.shape[0])
            buf = torch.empty((capacity, *x.shape[1:]), dtype=x.dtype, pin_memory=self.pin)
            self._buffer = buf
            self.allocations += 1
        staged = buf[:rows]
        staged.copy_(x)
        # Safe to reuse: callers read results back with .cpu(), which waits for this
        # stream (copy included) before the next batch is staged into the buffer.
        return staged.to(self.device, non_blocking=True)
