"""The prepared CUDA check stays runnable: the same script on the CPU."""

from __future__ import annotations

from benchmarks import gpu_check


def test_gpu_check_runs_on_the_cpu(capsys):
    assert gpu_check.main(["--device", "cpu", "--rows", "3000"]) == 0
    out = capsys.readouterr().out
    for check in ("handler", "oom", "learner", "pipeline", "backpressure"):
        assert f'"check": "{check}"' in out
