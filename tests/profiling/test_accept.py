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


def test_resume_finds_the_run_of_this_commit_across_midnight(tmp_path):
    """--resume continues the newest run of this device and commit whatever its date: a run started
    before midnight and resumed after it (CI 2026-12-01: the resumed call started afresh in a folder
    of the new date)."""
    from profiling.accept import resume_dir

    def run(name, commit, quick=True, age=0.0):
        d = tmp_path / name
        d.mkdir()
        (d / "accept.json").write_text(json.dumps(dict(meta=dict(commit=commit, quick=quick))))
        t = 1_000_000.0 - age
        os.utime(d / "accept.json", (t, t))
        return str(d)
    mine = run("cpu-2026-11-30", "abc", age=10)
    run("cpu-2026-11-29", "abc", age=100)               # older
    run("cpu-2026-11-30-2", "other", age=1)             # another commit
    run("nvidia-h200-2026-11-30", "abc", age=0)         # another device
    run("cpu-2026-11-30-3", "abc", quick=False, age=0)  # not a --quick run
    assert resume_dir(str(tmp_path), "cpu", "abc", True) == mine
    assert resume_dir(str(tmp_path), "cpu", "zzz", True) is None
    assert resume_dir(str(tmp_path / "missing"), "cpu", "abc", True) is None
