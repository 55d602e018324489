"""The GPU acceptance script runs end to end on a CPU in its --quick form (tiny sizes, a synthetic
data set), writes its summary as it goes, and a --resume call keeps the steps that passed."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _accept(*args):
    return subprocess.run([sys.executable, "-m", "profiling", "accept", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_accept_quick_end_to_end_and_resume(tmp_path):
    r = _accept("--quick", "--out", str(tmp_path))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (run,) = list(tmp_path.iterdir())
    state = json.loads((run / "accept.json").read_text())
    steps = {s["step"]: s for s in state["steps"]}
    assert list(steps) == ["kernel_tests", "train_eager", "train_triton", "report_quick"]
    assert all(s["status"] == "passed" for s in steps.values()), steps
    assert "passed" in steps["kernel_tests"]["result"] and "accuracy" in steps["train_eager"]["result"]
    readme = (run / "README.md").read_text()
    assert "CPU smoke version" in readme and "| train_triton | passed |" in readme
    for name in ("kernel_tests.log", "train_eager.log", "report_quick.log"):
        assert (run / name).stat().st_size > 0
    again = _accept("--quick", "--resume", "--out", str(tmp_path))
    assert again.returncode == 0 and again.stdout.count("passed in an earlier call, kept") == 4, again.stdout
    assert "(earlier call)" in (run / "README.md").read_text()


def test_accept_needs_data_on_a_gpu_and_a_real_directory(tmp_path):
    r = _accept("--quick", "--data", str(tmp_path / "missing"))
    assert r.returncode == 2 and "is not a directory" in r.stderr
