"""The tests that compile kernels for sm_80 / sm_90 in-process (tests/conftest.py COMPILED_MODE_MODULES)
run here in a pytest process of their own with Triton in compiled mode; in this process, where the
interpreter runs the kernels, compiling is refused with a clear error, whatever Triton's cache holds."""
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_the_compiling_modules_pass_in_compiled_mode():
    from conftest import COMPILED_MODE_MODULES
    env = dict(os.environ, TRITON_INTERPRET="0", SPEEDRUN_COMPILED_MODE_TESTS="1")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *[os.path.join("tests", m) for m in COMPILED_MODE_MODULES]],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-500:]


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine Triton runs compiled: nothing to refuse")
def test_compiling_under_the_interpreter_is_a_clear_error():
    import triton
    import triton.language as tl
    from profiling.predict import predict, rows

    @triton.jit
    def _row_sum(x_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
        cols = tl.arange(0, BLOCK)
        tl.store(out_ptr + tl.program_id(0), tl.sum(tl.load(x_ptr + tl.program_id(0) * n_cols + cols), axis=0))

    x, out = torch.empty(8, 128, device="meta"), torch.empty(8, device="meta")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=0"):
        predict(_row_sum, (8,), x, out, 128, BLOCK=128, arch="sm_90", work=rows(8, 128, [x], [out]))


def test_the_compiling_commands_run_on_a_machine_without_a_gpu_as_typed():
    """`python -m profiling predict` (and calibrate, static, launches --predict) typed on a machine
    without a GPU, TRITON_INTERPRET unset: importing the profiling package imports kernels, which turns
    the interpreter on before the command can say otherwise, so the command runs itself again in a
    process with Triton in compiled mode instead of refusing to compile."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-m", "profiling", "predict", "profiling/examples/vector_add.py:add_kernel",
                        "--grid", "4096", "--args", "x_ptr=fp32[4194304]", "y_ptr=fp32[4194304]",
                        "z_ptr=fp32[4194304]", "n=4194304", "BLOCK=1024", "--work", "elementwise", "--writes", "z_ptr"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "bound: memory" in r.stdout
