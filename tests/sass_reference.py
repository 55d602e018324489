"""Small reference kernels with known SASS structure, compiled for a GPU on this CPU machine and
read by profiling/sass.py; tests/test_sass.py runs this file in a child process (Triton must
not be in interpreter mode when the kernels are decorated) and checks the facts it prints.

    TRITON_INTERPRET=0 python tests/sass_reference.py [sm_90|sm_80]   # one JSON object per line

Each kernel comes in a good and a bad version of one habit:
- gemm_pipelined: one K loop with ``acc = tl.dot(a, b, acc)``: one main loop, wait depth >= 1.
- gemm_per_tap: the same GEMM nested in a static loop over 9 filter taps: nine loops, each drained.
- fp8_acc_add: fp8 ``acc += tl.dot(a, b)``: a zero-accumulator MMA and FADDs (flagged);
  fp8_acc_inplace: ``acc = tl.dot(a, b, acc)``: clean.
- fp8_mn_major: an fp8 A operand with M contiguous: transposed in shared memory byte by byte
  (STS.U8, flagged); fp8_k_major: K contiguous: clean.
- reduce_in_loop: a column sum with ``tl.sum`` (a cross-warp reduction) on every iteration;
  reduce_after_loop: accumulated in a 2-D register tile, one ``tl.sum`` after the loop.
"""
from __future__ import annotations

import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

BM, BN, BK = 128, 128, 64


@triton.jit
def gemm_pipelined(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + (k + rk)[:, None] * BN + rn[None, :])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def gemm_per_tap(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for tap in tl.static_range(9):
        for k in range(0, K, BK):
            a = tl.load(a_ptr + (rm[:, None] + tap) * K + (k + rk)[None, :])
            b = tl.load(b_ptr + tap * K * BN + (k + rk)[:, None] * BN + rn[None, :])
            acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def fp8_acc_add(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + rn[None, :] * K + (k + rk)[:, None])
        acc += tl.dot(a, b)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def fp8_acc_inplace(a_ptr, b_ptr, c_ptr, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + rn[None, :] * K + (k + rk)[:, None])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def fp8_mn_major(a_ptr, b_ptr, c_ptr, M, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    # A stored [K, M] (M contiguous): the tile [BM, BK] is M-major
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + (k + rk)[None, :] * M + rm[:, None])
        b = tl.load(b_ptr + rn[None, :] * K + (k + rk)[:, None])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def fp8_k_major(a_ptr, b_ptr, c_ptr, M, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.arange(0, BN)
    rk = tl.arange(0, BK)
    acc = tl.zeros([BM, BN], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(a_ptr + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(b_ptr + rn[None, :] * K + (k + rk)[:, None])
        acc = tl.dot(a, b, acc)
    tl.store(c_ptr + rm[:, None] * BN + rn[None, :], acc)


@triton.jit
def reduce_in_loop(x_ptr, out_ptr, M, C: tl.constexpr, BM: tl.constexpr):
    cols = tl.arange(0, C)
    s = tl.zeros([C], dtype=tl.float32)
    for m in range(0, M, BM):
        rows = m + tl.arange(0, BM)
        x = tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=(rows < M)[:, None], other=0.0).to(tl.float32)
        s += tl.sum(x, axis=0)
    tl.store(out_ptr + cols, s)


@triton.jit
def reduce_after_loop(x_ptr, out_ptr, M, C: tl.constexpr, BM: tl.constexpr):
    cols = tl.arange(0, C)
    acc = tl.zeros([BM, C], dtype=tl.float32)
    for m in range(0, M, BM):
        rows = m + tl.arange(0, BM)
        acc += tl.load(x_ptr + rows[:, None] * C + cols[None, :], mask=(rows < M)[:, None], other=0.0).to(tl.float32)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0))


def _compile(fn, types: dict, constexprs: dict, arch: str, num_warps: int = 4, num_stages: int = 3) -> dict:
    from profiling.sass import analyse_sass, wait_depth
    from profiling.cubin import compile_sass
    names = fn.arg_names
    sig = {n: types.get(n, "constexpr") for n in names}
    ce = {(names.index(k),): v for k, v in constexprs.items()}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if sig[n] != "constexpr"}
    _, _, sass = compile_sass(fn, sig, ce, attrs, num_warps, num_stages, arch)
    facts = analyse_sass(sass)
    return dict(loops=facts["loops"], main_loops=facts["main_loops"], drained_loops=facts["drained_loops"],
                wait_depth=wait_depth(facts), cp_async_wait=facts["cp_async_wait"], wgmma_wait=facts["wgmma_wait"],
                fadd_after_mma=facts["fadd_after_mma"], zero_acc_mma=facts["zero_acc_mma"], sts_u8=facts["sts_u8"],
                body_instrs=facts["body"]["instrs"] if facts["body"] else None,
                body_bar=facts["body"]["bar"] if facts["body"] else None,
                body_shfl=facts["body"]["shfl"] if facts["body"] else None,
                mma_shapes=facts["body"]["mma_shapes"] if facts["body"] else [], num_warps=num_warps)


def main(arch: str) -> None:
    gemm = dict(a_ptr="*fp16", b_ptr="*fp16", c_ptr="*fp32", K="i32")
    fp8 = dict(a_ptr="*fp8e4nv", b_ptr="*fp8e4nv", c_ptr="*fp32", K="i32", M="i32")
    tile = dict(BM=BM, BN=BN, BK=BK)
    red = dict(x_ptr="*fp16", out_ptr="*fp32", M="i32")
    jobs = [("gemm_pipelined", gemm_pipelined, gemm, tile), ("gemm_per_tap", gemm_per_tap, gemm, tile),
            ("reduce_in_loop", reduce_in_loop, red, dict(C=64, BM=32)),
            ("reduce_after_loop", reduce_after_loop, red, dict(C=64, BM=32))]
    if arch == "sm_90":
        jobs += [("fp8_acc_add", fp8_acc_add, {k: v for k, v in fp8.items() if k != "M"}, tile),
                 ("fp8_acc_inplace", fp8_acc_inplace, {k: v for k, v in fp8.items() if k != "M"}, tile),
                 ("fp8_mn_major", fp8_mn_major, fp8, tile), ("fp8_k_major", fp8_k_major, fp8, tile)]
    for name, fn, types, ce in jobs:
        facts = _compile(fn, types, ce, arch)
        if name.startswith("reduce"):
            facts["elems_per_iter_per_thread"] = ce["BM"] * ce["C"] / (facts["num_warps"] * 32)
        print(json.dumps(dict(name=name, arch=arch, **facts)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sm_90")
