"""The C kernels of ``model/`` (:file:`mlp_kernel.c`), compiled on first use.

The source ships with the package; the first process that needs it compiles it with
the system's C compiler (``$CC``, else ``cc``/``gcc``) into the cache directory
(``$SML_CACHE``, default ``~/.cache/streaming-ml``, under ``native/``), named by a
hash of the source, the flags and the CPU (it is built for the CPU it runs on), and
loads it with :mod:`ctypes` (no Python headers needed). Concurrent builds (several
Beam workers) each write a private file and rename it into place.

Without a compiler, or with ``SML_NATIVE=0``, :func:`mlp_library` returns None and
the callers keep their numpy code: the same results (to float32 rounding), slower.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from model.cache_dir import cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("mlp_kernel.c")
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
_SIGNATURES = {
    "mlp_scratch_floats": (_i64, [_p, _i32, _i64]),
    "mlp_predict": (_i32, [_p, _i64, _p, _i32, _p, _p, _p, _p, _p, _p, _i64, _p]),
    "mlp_forward_backward": (
        _i32,
        [_p, _p, _i64, _p, _i32, _p, _p, _f32, _p, _p, _p, _p, _p, _p, _i64, _i64, _p],
    ),
    "adam_step": (None, [_p, _p, _p, _p, _i64, _f32, _f32, _f32, _f32, _f32, _f32]),
    "sgd_step": (None, [_p, _p, _p, _i64, _f32, _f32, _f32, _i32]),
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


def build(
    source: Path = SOURCE, directory: Path | None = None, flags: tuple[str, ...] = FLAGS
) -> Path:
    """Compile ``source`` to a shared library (once per source, flags and machine)
    and return its path; raises ``RuntimeError`` when it cannot be built."""
    cc = _compiler()
    if cc is None:
        msg = "no C compiler found (set CC, or install cc/gcc)"
        raise RuntimeError(msg)
    code = source.read_bytes()
    tag = hashlib.sha256(
        code + " ".join(flags).encode() + platform.machine().encode() + _cpu() + cc.encode()
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
                [cc, *flags, "-o", tmp, str(source), "-lm"],
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


def load(path: Path) -> ctypes.CDLL:
    """A built kernel library, its functions typed."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


@functools.cache
def mlp_library() -> ctypes.CDLL | None:
    """The compiled MLP kernels, or None (no compiler, a failed build, or
    ``SML_NATIVE=0``: the reason is logged once)."""
    if os.environ.get("SML_NATIVE", "1") == "0":
        return None
    try:
        return load(build())
    except (OSError, RuntimeError) as err:
        log.warning("C kernels unavailable, using numpy: %s", err)
        return None
