"""The pytest-benchmark suite (profiling/benchmarks) runs green in CI (issue 17): every op,
the eager and Triton implementations, forward and forward+backward, at batch 2 on a CPU."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_benchmark_suite_passes(tmp_path):
    env = dict(os.environ, SPEEDRUN_BENCH_OPS="bn_act,maxpool,conv", SPEEDRUN_BENCH_IMPLS="eager,triton",
               SPEEDRUN_BENCH_BATCH="2", TRITON_INTERPRET="1")
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "profiling/benchmarks",
                        f"--benchmark-json={out}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stdout[-4000:]
    import json
    names = [b["name"] for b in json.loads(out.read_text())["benchmarks"]]
    assert any("whiten" in n and "fwd+bwd" in n for n in names)  # the whitening conv's bias gradient
    assert len(names) == len({n for n in names}) and len(names) >= 40
