"""The fused kernel's learner never loads torch._dynamo (2 s of a process's start)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import numpy as np
from model.learn import IncrementalLearner, LearnerConfig
from model.mlp import MLPClassifier
learner = IncrementalLearner(MLPClassifier(3, (8,), 2, seed=0), LearnerConfig(kernel="fused"))
x = np.random.default_rng(0).random((16, 3), dtype=np.float32)
for _ in range(5):
    learner.predict_learn(x, (x[:, 0] > 0.5).astype(int))
learner.restore(learner.snapshot())
print("torch._dynamo" in sys.modules)
"""


def test_a_fused_learner_learns_and_restores_without_loading_dynamo():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False", out.stderr
