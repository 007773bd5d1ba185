"""Running the build tools the runners need (Maven, javac, Go) as subprocesses."""

from __future__ import annotations

import subprocess


def run_tool(
    cmd: list[str],
    what: str,
    timeout_s: float,
    error: type[Exception],
    env: dict[str, str] | None = None,
) -> None:
    """Run ``cmd``; ``error`` naming ``what`` (with the end of the tool's output) when
    it fails or runs past ``timeout_s``."""
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=env
        )
    except subprocess.TimeoutExpired:
        msg = f"{what} took more than {timeout_s:.0f} s"
        raise error(msg) from None
    if done.returncode != 0:
        msg = f"{what} failed: {(done.stdout + done.stderr).strip()[-1500:]}"
        raise error(msg)
