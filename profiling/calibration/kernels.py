"""The public Triton kernels of the calibration suite, restated here so that the exact computation
is compiled on this machine (the suite predicts what these kernels cost and compares it with the
times their authors published).

Each one is written from the published kernel's description (its loads, arithmetic, stores, block
sizes and launch heuristics: those decide the SASS), not copied; the source each restates is named
beside it, and profiling/calibration/cases.py gives the measurements. Differences that could change
the compiled code are listed in the docstrings.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def softmax_rows(out_ptr, in_ptr, in_row_stride, out_row_stride, n_cols, BLOCK_SIZE: tl.constexpr):
    """Triton tutorial 02 (fused softmax) as it stood in early 2024: one program per row, the whole
    row in registers (BLOCK_SIZE = next power of two of the row), max-subtracted exponentials
    summed and divided, fp32 in and out. Launch: grid (rows,), num_warps 4, 8 from 2048 columns,
    16 from 4096."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_SIZE)
    inside = cols < n_cols
    x = tl.load(in_ptr + row * in_row_stride + cols, mask=inside, other=-float("inf"))
    shifted = x - tl.max(x, axis=0)
    e = tl.exp(shifted)
    tl.store(out_ptr + row * out_row_stride + cols, e / tl.sum(e, axis=0), mask=inside)


@triton.jit
def rms_norm_rows(y_ptr, y_row_stride, x_ptr, x_row_stride, w_ptr, w_row_stride, rstd_ptr, rstd_row_stride,
                  n_cols, eps, offset, BLOCK_SIZE: tl.constexpr):
    """Liger-Kernel 0.5.2's RMSNorm forward (``llama`` casting: the row squared and summed in fp32,
    the normalised row cast back to the input dtype before the weight multiplies it): one program per
    row, the reciprocal RMS stored per row. Launch: grid (rows,), BLOCK_SIZE = next power of two of
    the row, num_warps 4, 8 from 2048, 16 from 8192, 32 from 32768 (Liger's calculate_settings)."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_SIZE)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=inside, other=0)
    w = tl.load(w_ptr + cols * w_row_stride, mask=inside, other=0)
    xf = x.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row * rstd_row_stride, rstd)
    y = (xf * rstd).to(x.dtype) * (offset + w)
    tl.store(y_ptr + row * y_row_stride + cols, y, mask=inside)


@triton.jit
def layer_norm_rows(y_ptr, y_row_stride, x_ptr, x_row_stride, w_ptr, w_row_stride, b_ptr, b_row_stride,
                    mean_ptr, mean_row_stride, rstd_ptr, rstd_row_stride, n_cols, eps, BLOCK_SIZE: tl.constexpr):
    """Liger-Kernel 0.5.2's LayerNorm forward: one program per row, mean and variance of the row
    in registers, mean and reciprocal standard deviation stored per row, y = (x - mean) * rstd * w + b.
    Launch as rms_norm_rows."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK_SIZE)
    inside = cols < n_cols
    x = tl.load(x_ptr + row * x_row_stride + cols, mask=inside, other=0)
    w = tl.load(w_ptr + cols * w_row_stride, mask=inside, other=0)
    b = tl.load(b_ptr + cols * b_row_stride, mask=inside, other=0)
    mean = tl.sum(x, axis=0) / n_cols
    centred = x - mean
    var = tl.sum(centred * centred, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    tl.store(mean_ptr + row * mean_row_stride, mean)
    tl.store(rstd_ptr + row * rstd_row_stride, rstd)
    tl.store(y_ptr + row * y_row_stride + cols, centred * rstd * w + b, mask=inside)


@triton.jit
def matmul_grouped(a_ptr, b_ptr, c_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, stride_cm, stride_cn,
                   BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr, BLOCK_SIZE_K: tl.constexpr,
                   GROUP_SIZE_M: tl.constexpr):
    """Triton tutorial 03 (matrix multiplication): one output tile per program, programs ordered in
    groups of GROUP_SIZE_M tile rows (L2 reuse), a K loop with masked loads and ``tl.dot`` into an
    fp32 accumulator, the tile stored as fp16. Autotuned over the tutorial's configuration list
    (profiling/calibration/cases.py: MATMUL_CONFIGS)."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_SIZE_M)
    tiles_n = tl.cdiv(N, BLOCK_SIZE_N)
    per_group = GROUP_SIZE_M * tiles_n
    first_m = (pid // per_group) * GROUP_SIZE_M
    rows_here = min(tiles_m - first_m, GROUP_SIZE_M)
    tile_m = first_m + (pid % per_group) % rows_here
    tile_n = (pid % per_group) // rows_here
    rm = (tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)) % M
    rn = (tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)) % N
    rk = tl.arange(0, BLOCK_SIZE_K)
    a_tile = a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_tile = b_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_SIZE_M, BLOCK_SIZE_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_SIZE_K)):
        left = K - k * BLOCK_SIZE_K
        a = tl.load(a_tile, mask=rk[None, :] < left, other=0.0)
        b = tl.load(b_tile, mask=rk[:, None] < left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_tile += BLOCK_SIZE_K * stride_ak
        b_tile += BLOCK_SIZE_K * stride_bk
    cm = tile_m * BLOCK_SIZE_M + tl.arange(0, BLOCK_SIZE_M)
    cn = tile_n * BLOCK_SIZE_N + tl.arange(0, BLOCK_SIZE_N)
    tl.store(c_ptr + cm[:, None] * stride_cm + cn[None, :] * stride_cn, acc.to(tl.float16),
             mask=(cm[:, None] < M) & (cn[None, :] < N))
