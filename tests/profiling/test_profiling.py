import json
import math
import os
import subprocess
import sys

import pytest

from profiling.devices import detect, lookup
from profiling.shapes import network_ops, unique_ops

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_network_shapes_match_published():
    ops = network_ops(2000)
    bn = [c.x_shape for c in ops if c.op == "bn_act"]
    assert bn == [(2000, 64, 15, 15)] * 2 + [(2000, 256, 7, 7)] * 2 + [(2000, 256, 3, 3)] * 2
    assert ops[-1].out_shape == (2000, 256, 1, 1)
    assert ops[0].out_shape == (2000, 24, 31, 31)
    # the published airbench94_muon is 0.29 PFLOP for 200 training steps (fwd + bwd)
    pflop = 200 * sum(c.flops("fwd+bwd") for c in ops) / 1e15
    assert 0.27 < pflop < 0.30, pflop


def test_roofline_conv_by_hand():
    conv = next(c for c in network_ops(2000) if c.name == "group2.conv2")  # 256 -> 256, 7x7, 3x3
    flops = 2 * 2000 * 7 * 7 * 256 * 256 * 9
    assert conv.flops("fwd") == flops == 115_605_504_000
    assert conv.flops("fwd+bwd") == 3 * flops
    nbytes = 2 * (2000 * 256 * 49 * 2 + 256 * 256 * 9)  # x and y (fp16) + w
    assert conv.bytes_min("fwd", 2) == nbytes
    h100 = lookup("H100")
    # compute-bound: 115.6 GFLOP / 989.4 TFLOP/s = 116.8 us > 101.5 MB / 3.35 TB/s = 30.3 us
    assert conv.bound_s(h100, "fwd") == pytest.approx(flops / 989.4e12)
    assert conv.bound_s(h100, "fwd") == pytest.approx(116.84e-6, rel=1e-3)


def test_roofline_bn_act_by_hand():
    bn = next(c for c in network_ops(2000) if c.name == "group1.norm1")  # 2000x64x15x15
    x = 2000 * 64 * 15 * 15
    assert bn.flops() == 0
    assert bn.bytes_min("fwd", 2) == 3 * 2 * x  # read x twice, write y
    assert bn.bytes_min("fwd+bwd", 2) == 8 * 2 * x
    a100 = lookup("A100")
    assert bn.bound_s(a100, "fwd+bwd") == pytest.approx(16 * x / 2039e9)  # 460.8 MB at 2039 GB/s
    assert bn.bound_s(a100, "fwd+bwd") == pytest.approx(226.0e-6, rel=1e-3)


def test_device_detection():
    assert detect("NVIDIA H100 80GB HBM3").name == "H100-SXM"
    assert detect("NVIDIA H100 PCIe").name == "H100-PCIe"
    assert detect("NVIDIA A100-SXM4-40GB").hbm_gbps == 1555
    assert detect("NVIDIA H200").hbm_gbps == 4800
    assert detect("NVIDIA A100-SXM4-80GB").fp8_tflops is None
    assert detect("Tesla T4") is None
    with pytest.raises(ValueError, match="known:"):
        lookup("B200")


def test_unique_ops_dedupes():
    assert len(unique_ops(8, "bn_act")) == 3
    assert len(unique_ops(8, "maxpool")) == 4


def test_bench_command_outputs(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, "-m", "profiling", "bench", "--ops", "bn_act,maxpool", "--batch", "2",
                        "--peak", "H100", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "CPU timings say nothing about GPU speed" in r.stdout
    data = json.loads((out / "bench.json").read_text())
    recs = data["records"]
    assert {(x["impl"], x["mode"]) for x in recs} == {(i, m) for i in ("eager", "triton") for m in ("fwd", "fwd+bwd")}
    assert len(recs) == 2 * 2 * (3 + 4)
    for x in recs:
        assert "error" not in x, x
        assert x["ms"] > 0 and math.isfinite(x["gbps"]) and x["gbps"] > 0 and 0 < x["frac_roofline"] < 1
    md = (out / "bench.md").read_text()
    assert "| op @ shape |" in md and "group1.norm1 2x64x15x15" in md
    # CPU timings under load (issue 17): repetitions and load average recorded, the minimum taken
    assert len(data["meta"]["load_average"]) == 2 and "minimum of at least 5" in data["meta"]["timing"]
    assert all(x["reps"] >= 5 and x["statistic"] == "min" and isinstance(x["unreliable"], bool) for x in recs)
    assert "Load average (1 min)" in md and "| reps |" in md
    # memory-bound ops have no FLOP rate: '-', not 0
    head = next(ln for ln in md.splitlines() if ln.startswith("| op @ shape"))
    col = {name.strip(): i for i, name in enumerate(head.split("|"))}
    rows = [ln for ln in md.splitlines() if ln.startswith("| group1.norm1")]
    assert rows and all(ln.split("|")[col["TFLOP/s"]].strip() == "-" for ln in rows)
    # no CUDA graph on a CPU: the graph-replay column is empty, and no record claims a graph time
    assert all(ln.split("|")[col["graph ms"]].strip() == "-" for ln in rows)
    assert not any("graph_ms" in x for x in recs)
    for png in ("bench_time.png", "roofline.png"):
        pytest.importorskip("matplotlib")
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timing_marks_disagreeing_repetitions_unreliable():
    from profiling.timing import measure
    import time
    calls = iter(range(1000))

    def jittery():
        time.sleep(0.002 if next(calls) % 2 else 0.02)

    t = measure(jittery, "cpu", cpu_min_reps=6, cpu_min_s=0)
    assert t.reps >= 6 and t.statistic == "min" and t.unreliable and 1.5 < t.ms < 10
    steady = measure(lambda: time.sleep(0.005), "cpu", cpu_min_reps=5, cpu_min_s=0)
    assert not steady.unreliable


def test_time_chart_draws_points_not_bars(tmp_path, monkeypatch):
    plt = pytest.importorskip("matplotlib.pyplot")
    from matplotlib.axes import Axes
    from profiling import plots
    monkeypatch.setattr(Axes, "bar", lambda *a, **k: pytest.fail("bars on a log axis"))
    recs = [dict(case=c, impl=i, mode="fwd", ms=ms, bound_ms=0.01) for c, i, ms in
            (("a", "eager", 1.0), ("a", "triton", 0.1), ("b", "eager", 10.0))]
    path = plots.time_per_op(recs, str(tmp_path / "t.png"), "cpu, batch 2, float32 - CPU / Triton interpreter")
    assert path and (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    plt.close("all")


def test_recipe_ops_traces_the_real_network():
    """Shapes for any recipe come from tracing its network; for the default one they equal the
    hand-written list that the static model was built on."""
    from profiling.shapes import recipe_ops
    strip = lambda cs: [(c.op, c.name, c.x_shape, tuple(sorted(c.params.items()))) for c in cs]  # noqa: E731
    assert strip(recipe_ops("airbench94_muon", 2000)) == strip(network_ops(2000))
    hlb = recipe_ops("hlb", 8)
    assert [c.name for c in hlb[:3]] == ["whiten", "project", "group1.conv1"]
    assert hlb[0].params == dict(cout=12, k=2, padding=0, input_grad=False, weight_grad=False)
    assert hlb[1].params == dict(cout=32, k=1, padding=0) and hlb[-1].params["k"] == 3
    a96 = recipe_ops("airbench96", 8)
    assert sum(c.op == "conv" for c in a96) == 10 and a96[-1].x_shape == (8, 512, 3, 3)
    assert [c.params["activation"] for c in a96 if c.name == "group1.norm3"] == ["identity"]
    silu = {c.params["activation"] for c in recipe_ops("hiverge", 8) if c.op == "bn_act"}
    assert silu == {"silu"}
    mn = recipe_ops("mnist", 8)
    assert mn[0].x_shape == (8, 1, 28, 28) and mn[1].name == "pool1"


def test_bench_takes_a_recipe(tmp_path):
    from profiling.__main__ import main
    out = tmp_path / "b"
    main(["bench", "--recipe", "airbench96", "--ops", "bn_act", "--impls", "eager", "--modes", "fwd", "--no-plots",
          "--out", str(out)])
    data = json.loads((out / "bench.json").read_text())
    assert data["meta"]["recipe"] == "airbench96"
    assert {r["case"] for r in data["records"]} >= {"group3.norm3 2x512x3x3"}
    with pytest.raises(SystemExit) as e:
        main(["bench", "--recipe", "nope", "--out", str(out)])
    assert "unknown recipe 'nope'" in str(e.value)
