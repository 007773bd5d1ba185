"""Where the runners keep what they download or build: outside the checkout."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SML_CACHE``, default ``~/.cache/streaming-ml``."""
    return Path(os.environ.get("SML_CACHE", Path.home() / ".cache" / "streaming-ml"))
