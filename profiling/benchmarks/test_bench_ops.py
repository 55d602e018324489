"""pytest-benchmark suite: every op x implementation at the network's real shapes.

    python -m pytest profiling/benchmarks --benchmark-json=bench.json        # on a GPU
    python -m pytest profiling/benchmarks -k bn_act --benchmark-columns=median,ops

Shapes: one forward pass of the network at batch SPEEDRUN_BENCH_BATCH (default: 2000, the
airbench94_muon batch, on a GPU; 2 on a CPU, where the Triton kernels run in the interpreter
and the timings only prove that the suite works). SPEEDRUN_BENCH_IMPLS picks implementations
(default: all on a GPU; eager and triton on a CPU, where inductor's C++ compile is slow) and
SPEEDRUN_BENCH_OPS the ops, SPEEDRUN_BENCH_RECIPE the recipe whose network gives the shapes
(default airbench94_muon). Each timed call synchronises the GPU. extra_info of every result
holds the achieved GB/s and TFLOP/s against the roofline minimum (profiling/shapes.py) and
their fraction of the device's peak (profiling/devices.py).
"""
import os

import pytest
import torch

import kernels
from profiling.cases import MODES, make_callable
from profiling.devices import detect
from profiling.shapes import dtype_size, unique_ops

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
BATCH = int(os.environ.get("SPEEDRUN_BENCH_BATCH", 2000 if CUDA else 2))
DTYPE = torch.float16 if CUDA else torch.float32
OPS = os.environ.get("SPEEDRUN_BENCH_OPS", "bn_act,maxpool,conv").split(",")
_default_impls = None if CUDA else "eager,triton"
IMPLS = os.environ.get("SPEEDRUN_BENCH_IMPLS", _default_impls)
PEAK = detect(torch.cuda.get_device_name()) if CUDA else None
RECIPE = os.environ.get("SPEEDRUN_BENCH_RECIPE") or None
# output against eager: fp16 (GPU) as the kernel tests; fp8 quantises both operands of the conv
# (kernels/fp8.py: about 2 significant bits of relative error per product, averaged over the reduction)
TOLERANCE = {torch.float32: dict(rtol=1e-3, atol=1e-3), torch.float16: dict(rtol=2e-2, atol=2e-2),
             ("fp8", torch.float16): dict(rtol=0.15, atol=0.15), ("fp8", torch.float32): dict(rtol=0.15, atol=0.15)}


def _params():
    out = []
    for op in OPS:
        for impl in kernels.impls(op):
            if IMPLS and impl not in IMPLS.split(","):
                continue
            for case in unique_ops(BATCH, op, recipe=RECIPE):
                for mode in MODES:
                    out.append(pytest.param(case, impl, mode, id=f"{case.op}-{impl}-{mode}-{case.label()}"))
    return out


@pytest.mark.parametrize("case, impl, mode", _params())
def test_op(benchmark, case, impl, mode):
    fn = make_callable(case, impl, mode, DTYPE, DEVICE, sync=True)
    out = fn()  # compile / autotune outside the timed rounds
    # what is timed computes the op: its output against eager on the same inputs (same seed and mode)
    ref = make_callable(case, "eager", mode, DTYPE, DEVICE)()
    torch.testing.assert_close(out.float(), ref.float(), **TOLERANCE.get((impl, DTYPE), TOLERANCE[DTYPE]))
    if CUDA:
        benchmark.pedantic(fn, rounds=30, warmup_rounds=3, iterations=1)
    else:
        benchmark.pedantic(fn, rounds=2, warmup_rounds=0, iterations=1)
    t = benchmark.stats.stats.median
    nbytes = case.bytes_min(mode, dtype_size(DTYPE))
    info = dict(op=case.op, impl=impl, mode=mode, shape=list(case.x_shape), batch=BATCH,
                dtype=str(DTYPE).replace("torch.", ""), device=torch.cuda.get_device_name() if CUDA else "cpu",
                bytes_min=nbytes, flops=case.flops(mode), gbps=nbytes / t / 1e9, tflops=case.flops(mode) / t / 1e12)
    if PEAK is not None:
        info["frac_hbm"] = info["gbps"] / PEAK.hbm_gbps
        info["frac_roofline"] = case.bound_s(PEAK, mode, dtype_size(DTYPE)) / t
    else:
        info["note"] = "CPU timings say nothing about GPU speed"
    benchmark.extra_info.update(info)
