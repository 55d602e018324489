"""Adding an op touches its own file, the registry and its tests, nothing under profiling/ (issue 21):
a made-up elementwise op with a Triton kernel (tests/fixtures/double_op.py) appears in ``profiling
bench`` (timed, eager against Triton) and in ``profiling static`` (compiled for sm_90, modelled
with the work model its spec gives, its configuration list and its variants enumerated)."""
import json
import os
import subprocess
import sys

from conftest import ROOT

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def _run(args: list[str], interpret: str, tmp_path) -> subprocess.CompletedProcess:
    code = ("import sys; sys.path.insert(0, %r); import double_op; from profiling.__main__ import main; "
            "sys.exit(main(%r))" % (FIXTURES, args))
    env = dict(os.environ, TRITON_INTERPRET=interpret, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_new_op_appears_in_bench(tmp_path):
    out = tmp_path / "bench"
    p = _run(["bench", "--ops", "double", "--impls", "eager,triton", "--modes", "fwd", "--device", "cpu",
              "--no-plots", "--out", str(out)], "1", tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = json.loads((out / "bench.json").read_text())["records"]
    assert {(r["op"], r["impl"]) for r in recs} == {("double", "eager"), ("double", "triton")}
    assert all("error" not in r and r["case"].startswith("made-up") for r in recs)
    # the bytes a call must move are the spec's (the base spec's default: x read, y written once)
    assert all(r["bytes_min"] == 2 * 4 * 2 * 8 * 5 * 5 for r in recs)


def test_a_new_op_appears_in_static(tmp_path):
    out = tmp_path / "static"
    p = _run(["static", "--ops", "double", "--archs", "sm_90", "--dtype", "fp16", "--no-host", "--out", str(out)],
             "0", tmp_path)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    rows = [r for r in json.loads((out / "static.json").read_text())["rows"] if r["op"] == "double"]
    assert rows and {r["kernel"] for r in rows} == {"_double_kernel"}
    assert all(r["work_model"] == "kernel" and r["predicted_ms"] > 0 for r in rows)  # the spec's model, not generic
    assert {r["variant"] for r in rows} == {"default", "CONFIGS[0]", "CONFIGS[1]", "NARROW"}
    # the pinned entry is the one launched, and a spec's variant runs under its own context
    assert all("BLOCK=1024" in r["config"] for r in rows if r["variant"] == "CONFIGS[1]")
    assert all("BLOCK=256" in r["config"] for r in rows if r["variant"] in ("CONFIGS[0]", "default"))
    assert all("BLOCK=64" in r["config"] for r in rows if r["variant"] == "NARROW")
