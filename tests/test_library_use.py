"""The README's examples, run as a user runs them: each in a fresh Python process,
as a script of its own (its functions defined in ``__main__``), without this
project's runner set-up or Beam patches, on the runner Beam's own DirectRunner picks
(it tries Prism, which it downloads, and falls back to its Python runners where it
cannot: here, offline, the streaming DirectRunner, or the portable in-process runner
for a bounded pipeline)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_library_examples():
    assert len(EXAMPLES) >= 2
    for code in EXAMPLES:  # only the packages' public faces, no module paths
        for line in code.splitlines():
            if line.startswith(("from model", "from transforms")):
                assert re.match(r"from (model|transforms) import ", line), line


def _bounded(code: str) -> str:
    """A streaming example as a bounded run: Beam's runner for it encodes the elements
    between steps (model versions included), which the streaming one does not."""
    return code.replace('PipelineOptions(["--streaming"])', "PipelineOptions([])").replace(
        "streaming=True", "streaming=False"
    )


@pytest.mark.slow
@pytest.mark.parametrize("bounded", [False, True], ids=["as-written", "bounded"])
@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_a_readme_example_runs_as_a_script(tmp_path, index, bounded):
    code = EXAMPLES[index]
    if bounded and "--streaming" not in code:
        pytest.skip("a bounded example already")
    script = tmp_path / "example.py"
    script.write_text(_bounded(code) if bounded else code)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    lines = re.findall(r"^(\d+) rows scored by model v(\d+)$", done.stdout, re.M)
    assert sum(int(rows) for rows, _ in lines) > 0, done.stdout[-2000:]
    if "OnlineClassifier" in EXAMPLES[index]:  # learned: later windows scored by new versions
        assert max(int(version) for _, version in lines) >= 1
