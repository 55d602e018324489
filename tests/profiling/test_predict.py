"""profiling.predict on kernels written here (not the project's): elementwise, a row reduction and a
GEMM, each compiled for sm_90 / sm_80 on this CPU and predicted with a work helper; the generic
fallback warns; the CLI predicts a kernel from a file and refuses bad input in one line.

Compiling needs Triton in compiled mode, which the other tests' interpreter rules out in their process:
tests/profiling/test_compiled_mode.py runs this module in a process of its own (conftest.py
leaves it out of the others')."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import triton
import triton.language as tl

from profiling.predict import elementwise, gemm, predict, rows

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@triton.jit
def _scale_add(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    tl.store(out_ptr + offs, alpha * tl.load(x_ptr + offs, mask=m) + tl.load(y_ptr + offs, mask=m), mask=m)


@triton.jit
def _row_sum(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + row * n_cols + cols, mask=cols < n_cols, other=0.0)
    tl.store(out_ptr + row, tl.sum(x.to(tl.float32), axis=0))


@triton.jit
def _tile_gemm(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    pm = tl.program_id(0) // tl.cdiv(N, BN)
    pn = tl.program_id(0) % tl.cdiv(N, BN)
    rm = pm * BM + tl.arange(0, BM)
    rn = pn * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + (k + rk)[:, None] * N + rn[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], acc.to(tl.float16))


def meta(*shape, dtype=torch.float16):
    return torch.empty(shape, dtype=dtype, device="meta")


def test_elementwise_large_is_memory_bound_and_small_is_launch_bound():
    n = 1 << 25
    x, y, o = meta(n), meta(n), meta(n)
    big = predict(_scale_add, (n // 1024,), x, y, o, n, 2.0, BLOCK=1024, device="H100",
                  work=elementwise([x, y], [o]))
    assert big.work_model == "elementwise" and big.bound == "memory" and not big.warnings
    # 201 MB moved at the H100's 3.35 TB/s: the roofline; the prediction is slower, within 2x
    assert abs(big.roofline_us - 3 * n * 2 / 3350e3) < 1
    assert big.roofline_us < big.us < 2 * big.roofline_us
    lo, hi = big.range_us
    assert lo < big.us < hi
    small = predict(_scale_add, (4,), x[:4096], y[:4096], o[:4096], 4096, 2.0, BLOCK=1024, device="H100",
                    work=elementwise([x[:4096], y[:4096]], [o[:4096]]))
    assert small.bound == "launch" and small.us < 0.2 * big.us
    # the same launch on the A100 streams slower (2.0 vs 3.35 TB/s)
    a100 = predict(_scale_add, (n // 1024,), x, y, o, n, 2.0, BLOCK=1024, device="A100",
                   work=elementwise([x, y], [o]))
    assert a100.arch == "sm_80" and a100.us > 1.4 * big.us
    assert "elementwise" in str(big) and "not a measurement" in str(big)
    # the package-level entry point is the same function
    import profiling
    same = profiling.predict(_scale_add, (n // 1024,), x, y, o, n, 2.0, BLOCK=1024, device="H100",
                             work=elementwise([x, y], [o]))
    assert same.us == big.us


def test_row_reduction_uses_the_rows_model():
    x, out = meta(8192, 4096, dtype=torch.float32), meta(8192, dtype=torch.float32)
    p = predict(_row_sum, (8192,), x, out, 4096, BLOCK=4096, num_warps=8, device="H200",
                work=rows(8192, 4096, [x], [out]))
    assert p.work_model == "rows" and p.device == "H200"
    assert p.bound in ("memory", "latency", "issue")
    assert p.us > x.numel() * 4 / 4800e3  # not faster than the H200's HBM allows


def test_gemm_is_tensor_or_l2_bound_and_uses_wgmma_on_sm90():
    M = N = K = 4096
    a, b, c = meta(M, K), meta(K, N), meta(M, N)
    grid = ((M // 128) * (N // 128),)
    p = predict(_tile_gemm, grid, a, b, c, M, N, K, BM=128, BN=128, BK=64, num_warps=8, num_stages=3,
                arch="sm_90", work=gemm(M, N, K))
    assert p.work_model == "gemm" and p.bound in ("tensor", "l2", "smem", "issue")
    assert p.row["instr_per_mma"] is not None
    tflops = 2 * M * N * K / (p.us * 1e-6) / 1e12
    assert 200 < tflops < 989.4  # below the H100's dense fp16 peak, and not absurdly slow


def test_generic_fallback_warns_and_tensor_cores_without_flops_warn():
    n = 1 << 20
    x, y, o = meta(n), meta(n), meta(n)
    p = predict(_scale_add, (n // 1024,), x, y, o, n, 2.0, BLOCK=1024)
    assert p.work_model == "generic" and any("generic model" in w for w in p.warnings)
    a, b, c = meta(256, 256), meta(256, 256), meta(256, 256)
    g = predict(_tile_gemm, (4,), a, b, c, 256, 256, 256, BM=128, BN=128, BK=64, work=elementwise([a, b], [c]))
    assert any("tensor-core" in w for w in g.warnings)


def test_bad_input_is_a_clear_error():
    x = meta(1024)
    with pytest.raises(TypeError, match="@triton.jit"):
        predict(lambda: None, (1,), x)
    with pytest.raises(ValueError, match="sm_80"):
        predict(_scale_add, (1,), x, x, x, 1024, 1.0, BLOCK=1024, arch="sm_80", device="H100")
    with pytest.raises(ValueError, match="context"):
        predict(_scale_add, (1,), x, x, x, 1024, 1.0, BLOCK=1024, context="graph",
                work=elementwise([x, x], [x]))


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "profiling", "predict", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


def test_cli_predicts_a_kernel_from_a_file(tmp_path):
    f = tmp_path / "my_kernels.py"
    f.write_text(textwrap.dedent('''
        import triton
        import triton.language as tl

        @triton.jit
        def add_kernel(x_ptr, y_ptr, out_ptr, n, BLOCK: tl.constexpr):
            offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
            m = offs < n
            tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=m) + tl.load(y_ptr + offs, mask=m), mask=m)
    '''))
    r = _cli(f"{f}:add_kernel", "--grid", "16384", "--args", "x_ptr=fp32[16777216]", "y_ptr=fp32[16777216]",
             "out_ptr=fp32[16777216]", "n=16777216", "BLOCK=1024", "--work", "elementwise", "--device", "H100")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bound: memory" in r.stdout and "work model: elementwise" in r.stdout and "range" in r.stdout
    # README's worked example runs as written
    readme = open(os.path.join(ROOT, "README.md")).read()
    cmd = next(line.strip() for line in readme.splitlines()
               if line.strip().startswith("python -m profiling predict profiling/examples/vector_add.py"))
    ex = _cli(*cmd.split()[4:])
    assert ex.returncode == 0 and "bound: memory" in ex.stdout, ex.stderr[-2000:]
    bad = _cli(f"{f}:add_kernal", "--grid", "4")
    assert bad.returncode == 2 and "did you mean 'add_kernel'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = _cli(f"{f}:add_kernel", "--grid", "4", "--args", "x_ptr=fp32[16]")
    assert missing.returncode == 2 and "missing y_ptr, out_ptr, n" in missing.stderr



def test_launches_a_gpu_timed_are_rebuilt_and_modelled_here(tmp_path):
    """profiling launches --predict and profiling static's measured section: the launches of a
    launches.json (here the interpreter's, tests/fixtures) compiled for the measured GPU's arch and
    predicted on its peaks as launches timed alone, beside their measured times."""
    import json
    import shutil

    from profiling import launches
    from profiling.assemble import measured_vs_predicted
    from profiling.static_render import launches_section

    fixture = os.path.join(ROOT, "tests", "fixtures", "launches_interpreted.json")
    data = json.load(open(fixture))
    rows = launches.predict_records(data)
    assert [(r["kernel"], r["phase"]) for r in rows] == [("_conv_kernel", "fwd"), ("_conv_kernel", "bwd"),
                                                         ("_wgrad_kernel", "bwd")]
    for r, rec in zip(rows, data["records"]):
        assert r["arch"] == "sm_90" and r["device"] == "H200" and r["predicted_ms"] > 0 and r["bound"]
        assert r["ratio"] == pytest.approx(rec["measured_ms"] / r["predicted_ms"]) and "launch" not in r
        assert r["bounds_ms"]["fixed"] == pytest.approx(0.008)  # a launch timed alone: the isolated fixed cost

    rep = tmp_path / "nvidia-h200-2026-12-01"
    rep.mkdir()
    (rep / "report.json").write_text(json.dumps(dict(env=dict(device="NVIDIA H200", device_type="cuda"))))
    shutil.copy(fixture, rep / "launches.json")
    m = measured_vs_predicted([], [], 2000, str(tmp_path))
    lau = m["launches"]
    assert lau["spread"]["n"] == 3 and set(lau["per_kernel"]) == {"_conv_kernel", "_wgrad_kernel"}
    assert lau["best"] == [] and lau["complete"] and lau["errors"] == 0  # one configuration each: nothing to rank
    text = "\n".join(launches_section(lau))
    assert "over 3 launches" in text and "| _wgrad_kernel | 1 |" in text

    r = subprocess.run([sys.executable, "-m", "profiling", "launches", "--predict", fixture, "--out", str(tmp_path / "o")],
                       cwd=ROOT, capture_output=True, text=True, timeout=900,
                       env=dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "measured / predicted over 3 launches" in (tmp_path / "o" / "launches.md").read_text()
