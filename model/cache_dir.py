"""Where the project keeps what it downloads or builds: outside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SML_CACHE``, default ``~/.cache/streaming-ml``: the C kernels (``native/``),
    the Flink job server and cluster files, Prism, Maven and Go caches."""
    return Path(os.environ.get("SML_CACHE", Path.home() / ".cache" / "streaming-ml"))
