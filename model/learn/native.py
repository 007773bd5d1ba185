"""The C kernels of ``model/`` (:file:`mlp_kernel.c`), compiled on first use.

The source ships with the package; the first process that needs it compiles it with
the system's C compiler (``$CC``, else ``cc``/``gcc``) into the cache directory
(``$SML_CACHE``, default ``~/.cache/streaming-ml``, under ``native/``), named by a
hash of the source, the flags and the CPU (it is built for the CPU it runs on), and
loads it with :mod:`ctypes` (no Python headers needed). Concurrent builds (several
Beam workers) each write a private file and rename it into place.

Without a compiler, or with ``SML_NATIVE=0``, :func:`mlp_library` returns None and
the callers keep their numpy code: the same results (to float32 rounding), slower.

:class:`NativeMLP` makes the calls for one MLP (:class:`model.learn.fused.FusedMLP`
uses it when the library is there).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model.cache_dir import cache_dir

if TYPE_CHECKING:
    from model.learn.scaler import RunningScaler

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("mlp_kernel.c")
MAX_LAYERS = 64  # as in mlp_kernel.c
# No -ffast-math, and no contraction of a * b + c into one fused multiply-add (which
# rounds once instead of twice, where the CPU has one): the kernels then give the same
# bits at any optimization level and on any x86-64 CPU, so a run replayed on another
# machine (a restarted Flink task) learns exactly the same weights. Checked in tests.
# (gcc already turns contraction off under -std=c99; clang does not.)
FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-ffp-contract=off",
    "-shared",
    "-fPIC",
    "-std=c99",
)

_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_i32 = ctypes.c_int32
_f32 = ctypes.c_float
_f64 = ctypes.c_double
_SIGNATURES = {
    "mlp_scratch_floats": (_i64, [_p, _i32, _i64]),
    "mlp_predict": (_i32, [_p, _i64, _p, _i32, _p, _p, _p, _p, _p, _p, _i64, _p]),
    "mlp_forward_backward": (
        _i32,
        [_p, _p, _i64, _p, _i32, _p, _p, _f32, _p, _p, _p, _p, _p, _p, _i64, _i64, _p],
    ),
    "adam_step": (None, [_p, _p, _p, _p, _i64, _f32, _f32, _f32, _f32, _f32, _f32]),
    "sgd_step": (None, [_p, _p, _p, _i64, _f32, _f32, _f32, _i32]),
    "mlp_prequential_steps": (
        _i64,
        [_p, _p, _i64, _i64, _p, _i32, _p, _p, _p, _p, _p, _p, _p, _p, _i64, _p, _i32]
        + [_f64] * 6
        + [_i64, _p, _p, _i64],
    ),
}


def _cpu() -> bytes:
    """What ``-march=native`` depends on: the CPU's feature flags (Linux), else the
    processor's name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line.encode()
    except OSError:
        pass
    return platform.processor().encode()


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _cxx_compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def build(
    source: Path = SOURCE,
    directory: Path | None = None,
    flags: tuple[str, ...] = FLAGS,
    *,
    cxx: bool = False,
    link: tuple[str, ...] = ("-lm",),
) -> Path:
    """Compile ``source`` (C, or C++ with ``cxx``) to a shared library, once per
    source, flags and machine, and return its path; raises ``RuntimeError`` when it
    cannot be built. ``link``: what goes after the source on the command line."""
    cc = _cxx_compiler() if cxx else _compiler()
    if cc is None:
        kind = "C++" if cxx else "C"
        msg = f"no {kind} compiler found (set {'CXX' if cxx else 'CC'}, or install gcc/g++)"
        raise RuntimeError(msg)
    code = source.read_bytes()
    tag = hashlib.sha256(
        code
        + " ".join((*flags, *link)).encode()
        + platform.machine().encode()
        + _cpu()
        + cc.encode()
    ).hexdigest()[:16]
    directory = directory or cache_dir() / "native"
    target = directory / f"{source.stem}-{tag}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(fd)
    try:
        try:
            done = subprocess.run(
                [cc, *flags, "-o", tmp, str(source), *link],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as err:
            msg = f"cannot run the C compiler {cc}: {err}"
            raise RuntimeError(msg) from err
        if done.returncode != 0:
            msg = f"{cc} failed on {source.name}: {done.stderr.strip()[-2000:]}"
            raise RuntimeError(msg)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


Signatures = Mapping[str, tuple[Any, Sequence[Any]]]  # name: (restype, argtypes)


def load(path: Path, signatures: Signatures | None = None) -> ctypes.CDLL:
    """A built kernel library, its functions typed (default: the MLP kernels')."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in (signatures or _SIGNATURES).items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def compiled(source: Path, signatures: Signatures) -> ctypes.CDLL | None:
    """The C kernels of ``source``, built and loaded once per process, or None (no
    compiler, a failed build, or ``SML_NATIVE=0``: the reason is logged once)."""
    if source not in _LOADED:
        _LOADED[source] = _build_and_load(source, signatures)
    return _LOADED[source]


_LOADED: dict[Path, ctypes.CDLL | None] = {}


def _build_and_load(source: Path, signatures: Signatures) -> ctypes.CDLL | None:
    if os.environ.get("SML_NATIVE", "1") == "0":
        return None
    try:
        return load(build(source), signatures)
    except (OSError, RuntimeError) as err:
        log.warning("C kernels of %s unavailable, using numpy: %s", source.name, err)
        return None


def mlp_library() -> ctypes.CDLL | None:
    """The compiled MLP kernels, or None (see :func:`compiled`)."""
    return compiled(SOURCE, _SIGNATURES)


class NativeMLP:
    """The C kernels' calls for one MLP, through buffers kept for the purpose: reading
    a numpy array's address costs more than a step's arithmetic on a small batch, so
    inputs are copied into buffers whose addresses are read once.

    ``sizes`` are the layer widths (input first), ``flat`` and ``grad`` the MLP's
    parameters and gradient (:class:`model.learn.fused.FusedMLP`'s buffers), which
    the calls read and write in place."""

    def __init__(
        self, lib: ctypes.CDLL, sizes: np.ndarray, flat: np.ndarray, grad: np.ndarray
    ) -> None:
        self.lib = lib
        self.sizes = sizes
        self.layers = len(sizes) - 1
        if self.layers > MAX_LAYERS:  # the C code's fixed bound
            msg = f"the C kernels take MLPs of up to {MAX_LAYERS} layers, got {self.layers}"
            raise ValueError(msg)
        self.width = int(sizes[0])
        self.classes = int(sizes[-1])
        self.count = len(flat)
        self.static = _ptr(sizes), _ptr(flat), _ptr(grad)
        self.loss = np.zeros(1, np.float64)
        self.loss_ptr = _ptr(self.loss)
        self._stats = np.zeros(2 * self.width, np.float64)  # the scaling's scratch
        self.stats = _ptr(self._stats)
        self.rows = 0
        self._grow(256)

    def _grow(self, n: int) -> None:
        rows = max(n, 2 * self.rows)
        self.x = np.empty((rows, self.width), np.float32)
        self.y = np.empty(rows, np.int64)
        self.cls = np.empty(rows, np.int64)
        self.conf = np.empty(rows, np.float32)
        need = self.lib.mlp_scratch_floats(self.static[0], self.layers, rows)
        self.scratch = np.empty(need, np.float32)
        self.ptrs = tuple(_ptr(a) for a in (self.x, self.y, self.cls, self.conf, self.scratch))
        self.rows = rows

    def _load(self, x: np.ndarray) -> int:
        """Copy ``x`` into the input buffer; returns its rows."""
        n = len(x)
        check_width(x, self.width)
        if n > self.rows:
            self._grow(n)
        self.x[:n] = x
        return n

    def _moments(self, scaler: RunningScaler | None) -> tuple[int | None, int | None, int]:
        """What the C code reads and updates in place (checked by the caller: a ready
        scaler as wide as the input)."""
        if scaler is None:
            return None, None, 0
        return (*scaler.addresses(), scaler.n)

    def classify(
        self, x: np.ndarray, scaler: RunningScaler | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = self._load(x)
        px, _, pc, pp, ps = self.ptrs
        sizes, flat, _ = self.static
        mean, m2, count = self._moments(scaler)
        status = self.lib.mlp_predict(
            px, n, sizes, self.layers, flat, ps, pc, pp, mean, m2, count, self.stats
        )
        assert status == 0, status
        return self.cls[:n].copy(), self.conf[:n].copy()

    def learn(
        self, x: np.ndarray, y: np.ndarray, scale: float, scaler: RunningScaler | None, fold: int
    ) -> tuple[np.ndarray, np.ndarray, float]:
        n = self._load(x)
        self.y[:n] = y
        px, py, pc, pp, ps = self.ptrs
        sizes, flat, grad = self.static
        mean, m2, count = self._moments(scaler)
        status = self.lib.mlp_forward_backward(
            px, py, n, sizes, self.layers, flat, grad, scale, ps, pc, pp, self.loss_ptr,
            mean, m2, count, fold, self.stats,
        )  # fmt: skip
        if status == -1:
            raise ValueError(label_error(np.asarray(y), self.classes))
        assert status == 0, status  # -2 (too many layers) is refused in __init__
        if scaler is not None:
            scaler.folded(fold)
        return self.cls[:n].copy(), self.conf[:n].copy(), float(self.loss[0])

    def steps(
        self,
        x: np.ndarray,
        y: np.ndarray,
        step: int,
        scaler: RunningScaler | None,
        optimizer: StepRule,
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Prequential learning of ``x`` in steps of ``step`` rows, each followed by an
        optimizer step (``optimizer``: the rule and the buffers it updates): every row's
        class and probability before its step, and the number of steps. The rows are
        scaled by, and folded into, ``scaler`` step by step."""
        n = self._load(x)
        self.y[:n] = y
        px, py, pc, pp, ps = self.ptrs
        sizes, flat, grad = self.static
        mean, m2, count = self._moments(scaler)
        o = optimizer
        steps = self.lib.mlp_prequential_steps(
            px, py, n, step, sizes, self.layers, flat, grad, ps, pc, pp, self.loss_ptr,
            mean, m2, count, self.stats, o.kind, o.lr, o.beta1, o.beta2, o.eps, o.wd,
            o.momentum, o.t0, o.m, o.v, self.count,
        )  # fmt: skip
        if steps == -1:
            raise ValueError(label_error(np.asarray(y), self.classes))
        assert steps >= 0, steps  # -2 (too many layers) is refused in __init__
        if scaler is not None:
            scaler.folded(n)
        return self.cls[:n].copy(), self.conf[:n].copy(), int(steps)

    def adam(self, buffers: tuple[int, ...], lr_bias1: float, beta1: float, beta2: float,
             sqrt_bias2: float, eps: float, wd: float) -> None:  # fmt: skip
        _, flat, grad = self.static
        m, v = buffers
        self.lib.adam_step(
            flat, grad, m, v, self.count, lr_bias1, beta1, beta2, sqrt_bias2, eps, wd
        )

    def sgd(self, buf: int | None, lr: float, momentum: float, wd: float, first: bool) -> None:
        _, flat, grad = self.static
        self.lib.sgd_step(flat, grad, buf, self.count, lr, momentum, wd, int(first))


@dataclass(frozen=True)
class StepRule:
    """An optimizer step as :func:`NativeMLP.steps` takes it: ``kind`` 0 Adam (step
    counter ``t0`` before the first, moments at addresses ``m`` and ``v``), 1 SGD
    (momentum buffer at ``m``, or None without momentum)."""

    kind: int
    lr: float
    wd: float
    m: int | None
    v: int | None = None
    beta1: float = 0.0
    beta2: float = 0.0
    eps: float = 0.0
    momentum: float = 0.0
    t0: int = 0


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def check_width(x: np.ndarray, width: int) -> None:
    """Rows of ``width`` features, or a ``ValueError`` saying what came instead."""
    if x.ndim != 2 or x.shape[1] != width:
        msg = f"expected rows of {width} features, got shape {x.shape}"
        raise ValueError(msg)


def label_error(y: np.ndarray, classes: int) -> str:
    """The message for labels that are not class indices below ``classes``."""
    bad = y[(y < 0) | (y >= classes)]
    return f"labels must be class indices in [0, {classes}), got {bad[:5].tolist()}"
