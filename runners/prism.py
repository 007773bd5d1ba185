"""Beam's Prism runner, built from source through the Go module proxy.

Prism is Beam's portable local runner (Go): a real streaming runner with TestStream,
watermark holds for timers, and state and timers over the Fn API, the path Flink's
job server serves too. Beam 2.77 downloads its binary from GitHub at run time, which
this project cannot reach; :func:`prism_binary` builds it instead with
``go install github.com/apache/beam/sdks/v2/go/cmd/prism@v<beam version>`` into
``$SML_CACHE/prism/<version>/`` (modules cached in ``$SML_CACHE/go``), once.

    python -m runners.prism build     # prints the binary's path

Known difference from the DirectRunner: Prism (2.77) does not hold main-input elements
until a side input is ready for their window, so the *decoupled* online mode's scorer
mostly sees older model versions there (never newer ones: no leakage). The coupled
mode, and everything without side inputs, gives the DirectRunner's results (tested).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from model.cache_dir import cache_dir
from runners.flink import beam_version
from runners.tools import run_tool

PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"
BUILD_TIMEOUT_S = 1200


class PrismUnavailable(RuntimeError):
    """The Prism binary is not here and cannot be built."""


def prism_binary(version: str | None = None, *, build: bool = True) -> Path:
    """The Prism binary for Beam ``version`` (default: the installed Beam's)."""
    version = version or beam_version()
    target = cache_dir() / "prism" / version
    binary = target / "prism"
    if binary.is_file():
        return binary
    if not build:
        msg = f"no Prism binary at {binary}: run python -m runners.prism build"
        raise PrismUnavailable(msg)
    go = shutil.which("go")
    if go is None:
        msg = f"building Prism needs Go (go install {PACKAGE}@v{version}); no go on PATH"
        raise PrismUnavailable(msg)
    partial = target.with_name(f"{version}.part{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    env = dict(
        os.environ,
        GOBIN=str(partial),
        GOPATH=str(cache_dir() / "go"),
        GOMODCACHE=str(cache_dir() / "go" / "pkg" / "mod"),
        GOFLAGS="-mod=mod",
    )
    what = f"go install {PACKAGE}@v{version}"
    try:
        run_tool(
            [go, "install", f"{PACKAGE}@v{version}"], what, BUILD_TIMEOUT_S, PrismUnavailable, env
        )
        built = partial / "prism"
        if not built.is_file():
            msg = f"{what} left no binary in {partial}"
            raise PrismUnavailable(msg)
        target.mkdir(parents=True, exist_ok=True)
        os.replace(built, binary)  # atomic: a half-copied binary is never used
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return binary


def prism_args(binary: Path | None = None) -> list[str]:
    """PrismRunner pipeline arguments (LOOPBACK workers in this process)."""
    return [
        "--runner=PrismRunner",
        f"--prism_location={binary or prism_binary()}",
        "--environment_type=LOOPBACK",
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["build"]:
        print("usage: python -m runners.prism build", file=sys.stderr)
        return 2
    try:
        print(prism_binary())
    except PrismUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
