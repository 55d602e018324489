"""BatchNorm + activation: ``act(batch_norm(x, ...))`` with act in {gelu, silu}.

Implementations
    eager    F.batch_norm + F.gelu / F.silu (the reference)
    compile  the reference under torch.compile
    triton   fused Triton kernels, forward and backward (below)

The Triton path views a 4-D activation as a matrix [M = N*H*W, C]: in channels_last memory
that matrix is row-major (row m = one pixel, its C channels contiguous), in NCHW memory each
channel is N runs of H*W contiguous values. Every kernel works on [BLOCK_M, BLOCK_C] tiles
of it and reduces over M.

Training forward: 2 launches.
    1. _stats_kernel: the grid is sized from the SM count (one program per resident slot, whole
       waves); each program walks its chunk of rows and accumulates shifted sums
       d = x - shift, d * d in 2-D register tiles (one cross-warp reduction after its loop, not
       one per iteration). The shift is row 0 of x per channel, so the sums stay small even when
       |mean| >> std (no E[x^2] - E[x]^2 cancellation: tested at mean 1e4, std 1). Each program
       adds its column sums to a per-device fp32 workspace with atomics and takes a ticket; the
       last program of a channel block finalises: mean, biased variance, and the running
       statistics (unbiased variance) updated in place, and zeroes the workspace for the next
       call. No separate finalize or running-statistics launch.
    2. _apply_kernel: y = act(x * scale + shift), scale = w / sqrt(var + eps),
       shift = b - mean * scale, written in x's dtype; a grid-stride loop over row tiles on a
       grid of whole waves.
Eval forward: step 2 alone, from the running statistics.

Backward: 2 launches; nothing activation-sized is saved but x itself.
    z = w * xhat + b is recomputed from x, mean, var; dz = dy * act'(z).
    1. _bwd_reduce_kernel: sums of dz and dz * xhat (= dbias, dweight) in 2-D register tiles,
       finalised by the last program as in the forward (no separate column sums).
    2. _bwd_dx_kernel: training: dx = w * invstd * (dz - mean(dz) - xhat * mean(dz * xhat));
       eval: dx = w * invstd * dz.
GELU and its derivative share one exp: erf(u) = 1 - t * P(t) * exp(-u^2), t = 1 / (1 + p|u|)
(Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7), and exp(-u^2) = exp(-z^2 / 2) is also the
Gaussian density in GELU'(z) = Phi(z) + z * phi(z). SiLU uses one exp and a fast reciprocal.
Traffic at the real shapes: forward reads x twice and writes y once; backward reads x and dy
twice and writes dx once (8 passes over an activation for forward + backward).

The atomics make the statistics' last bits depend on the order the programs finish in (a
run-to-run difference of about 1e-7 relative on a GPU); the interpreter is deterministic.
"""
from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F

from . import fp8
from ._compiled import compiled
from ._triton import (HAS_TRITON, check_tensor, interpreting, launch, memory_layout, programs_per_wave,
                      stream_key, triton_version)
from .registry import register
from .spec import (ConfigList, OpSpec, SampleCall, Sampler, Work, grid_of, register_spec, rows_iters,
                   stride_iters)

ACTIVATIONS = ("gelu", "silu", "identity")  # identity: BatchNorm alone (before a residual add)


def check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"bn_act: unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")


@register("bn_act", "eager")
def bn_act_eager(x: torch.Tensor, running_mean, running_var, weight=None, bias=None,
                 training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                 activation: str = "gelu") -> torch.Tensor:
    """Reference: F.batch_norm followed by F.gelu, F.silu or nothing (cuDNN / ATen kernels)."""
    check_activation(activation)
    if weight is None and bias is not None:
        # CUDA's batch-norm backward fails when the weight is None and the bias is not (torch 2.11,
        # fp32, H200: "NativeBatchNormBackward0 returned an invalid gradient at index 2 - got [0]";
        # with a weight of ones and no gradient: "tensor does not have a device"). The bias is
        # added after a batch norm without affine parameters: the same numbers, its own gradient.
        y = F.batch_norm(x, running_mean, running_var, None, None, training, momentum, eps)
        y = y + bias.to(y.dtype).view(1, -1, *([1] * (x.dim() - 2)))
    else:
        y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return F.gelu(y) if activation == "gelu" else F.silu(y) if activation == "silu" else y


register("bn_act", "compile")(compiled(
    bn_act_eager, "The eager reference under torch.compile (inductor's fused kernels)."))


# ------------------------------------------------------------------------------------ kernels
if HAS_TRITON:
    import triton
    import triton.language as tl
    from triton.language.extra import libdevice

    from .fp8 import fp8_amax_of, fp8_amax_update, fp8_cast, fp8_rollover, fp8_scale

    # Compiled kernels use the approximate (single-instruction) reciprocal and exponential: no
    # range fix-ups around MUFU.RCP / MUFU.EX2, a third fewer instructions per element. The
    # interpreter has no libdevice, so there the same formulas run with tl.fdiv / tl.exp.
    FAST_MATH = not interpreting()

    @triton.jit
    def _rcp(x, FAST: tl.constexpr):
        """1/x: libdevice fast_dividef when FAST (a GPU), else a division without IEEE rounding."""
        if FAST:
            return libdevice.fast_dividef(1.0, x)
        else:
            return tl.fdiv(1.0, x, ieee_rounding=False)

    @triton.jit
    def _exp(x, FAST: tl.constexpr):
        """exp(x): libdevice fast_expf when FAST (a GPU), else tl.exp."""
        if FAST:
            return libdevice.fast_expf(x)
        else:
            return tl.exp(x)

    @triton.jit
    def _offsets(rows, cols, M, C, HW, CHANNELS_LAST: tl.constexpr):
        """Element offsets and mask of the [rows, cols] tile of the [M, C] view."""
        mask = (rows[:, None] < M) & (cols[None, :] < C)
        if CHANNELS_LAST:
            offs = rows[:, None].to(tl.int64) * C + cols[None, :]
        else:
            n = rows // HW
            hw = rows - n * HW
            offs = (n.to(tl.int64) * C * HW + hw)[:, None] + cols[None, :].to(tl.int64) * HW
        return offs, mask

    @triton.jit
    def _col_offsets(cols, C, HW, CHANNELS_LAST: tl.constexpr):
        """Offsets of row 0 of the [M, C] view (the shift of the shifted sums)."""
        if CHANNELS_LAST:
            return cols
        else:
            return cols.to(tl.int64) * HW

    @triton.jit
    def _gelu_cdf(z, FAST: tl.constexpr):
        """(Phi(z), exp(-z^2/2)): the normal CDF from Abramowitz & Stegun 7.1.26 and the shared exp."""
        u = z * 0.7071067811865476
        e = _exp(-0.5 * z * z, FAST)
        t = _rcp(1.0 + 0.3275911 * tl.abs(u), FAST)
        poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
        half_erf = 0.5 - 0.5 * poly * e  # erf(|u|) / 2
        return 0.5 + tl.where(u < 0, -half_erf, half_erf), e

    @triton.jit
    def _sigmoid(z, FAST: tl.constexpr):
        """1 / (1 + exp(-z)), with _exp and _rcp (FAST as there)."""
        return _rcp(1.0 + _exp(-z, FAST), FAST)

    @triton.jit
    def _act_fwd(z, ACT: tl.constexpr, FAST: tl.constexpr = FAST_MATH):
        """The activation of z: ACT 0 GELU (erf form), 1 SiLU, 2 identity (FAST as _exp)."""
        if ACT == 0:  # GELU (erf form, as F.gelu)
            cdf, _ = _gelu_cdf(z, FAST)
            return z * cdf
        elif ACT == 1:  # SiLU
            return z * _sigmoid(z, FAST)
        else:  # identity
            return z

    @triton.jit
    def _act_grad(z, ACT: tl.constexpr, FAST: tl.constexpr = FAST_MATH):
        """d act(z) / dz for ACT as in _act_fwd."""
        if ACT == 0:
            cdf, e = _gelu_cdf(z, FAST)
            return cdf + z * e * 0.3989422804014327
        elif ACT == 1:
            s = _sigmoid(z, FAST)
            return s * (1.0 + z * (1.0 - s))
        else:
            return z * 0.0 + 1.0

    @triton.jit
    def _stats_kernel(x_ptr, ws_ptr, cnt_ptr, mean_ptr, var_ptr, rm_ptr, rv_ptr, M, C, HW, ROWS, momentum, unbias,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                      UPDATE_RUNNING: tl.constexpr):
        """Batch statistics of x per channel: mean and biased variance, from sums of (x - shift)
        shifted by each channel's first element (no cancellation), and the running statistics updated.

        x_ptr     x, read as M rows of C channels: [M][C] when CHANNELS_LAST (an NHWC tensor, M = N*H*W),
                  else NCHW, [N][C][HW] (M = N*HW); see _offsets
        ws_ptr    fp32 workspace [2][C] (sum, sum of squares), all zero between launches
        cnt_ptr   int32 tickets, one per channel block (program_id 1), all zero between launches
        mean_ptr, var_ptr   fp32 [C] outputs (written by the last program of each channel block)
        rm_ptr, rv_ptr      running mean and variance [C], updated in place when UPDATE_RUNNING
        M, C, HW  rows, channels, pixels per image; ROWS: rows per program (program_id 0)
        momentum, unbias    the running update: r = (1 - momentum) r + momentum * stat (var * unbias)"""
        pid_m = tl.program_id(0)
        pid_c = tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        shift = tl.load(x_ptr + _col_offsets(cols, C, HW, CHANNELS_LAST), mask=cmask, other=0.0).to(tl.float32)
        acc1 = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        start = pid_m * ROWS
        end = tl.minimum(start + ROWS, M)
        for i in range(0, ROWS, BLOCK_M):
            rows = start + i + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, end, C, HW, CHANNELS_LAST)  # this program's rows only
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            d = tl.where(mask, x - shift[None, :], 0.0)
            acc1 += d
            acc2 += d * d
        # one cross-warp reduction per program; the grid's partial sums meet in the workspace
        tl.atomic_add(ws_ptr + cols, tl.sum(acc1, axis=0), mask=cmask)
        tl.atomic_add(ws_ptr + C + cols, tl.sum(acc2, axis=0), mask=cmask)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_c, 1)
        if ticket == tl.num_programs(0) - 1:  # the last program of this channel block finalises
            zero = tl.zeros([BLOCK_C], dtype=tl.float32)
            s1 = tl.atomic_add(ws_ptr + cols, zero, mask=cmask)  # read at L2, where the atomics landed
            s2 = tl.atomic_add(ws_ptr + C + cols, zero, mask=cmask)
            tl.store(ws_ptr + cols, zero, mask=cmask)  # leave the workspace zero for the next call
            tl.store(ws_ptr + C + cols, zero, mask=cmask)
            d_mean = s1 / M
            var = tl.maximum(s2 / M - d_mean * d_mean, 0.0)
            mean = shift + d_mean
            tl.store(mean_ptr + cols, mean, mask=cmask)
            tl.store(var_ptr + cols, var, mask=cmask)
            if UPDATE_RUNNING:
                rm = tl.load(rm_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
                rv = tl.load(rv_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
                tl.store(rm_ptr + cols, ((1 - momentum) * rm + momentum * mean).to(rm_ptr.dtype.element_ty),
                         mask=cmask)
                tl.store(rv_ptr + cols, ((1 - momentum) * rv + momentum * var * unbias).to(rv_ptr.dtype.element_ty),
                         mask=cmask)
            tl.store(cnt_ptr + pid_c, 0)

    @triton.jit
    def _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps,
                        HAS_W: tl.constexpr, HAS_B: tl.constexpr):
        """Per-channel (mean, 1/sqrt(var + eps), weight, bias) of the channels ``cols``, as fp32 [BLOCK_C];
        weight 1 without HAS_W, bias 0 without HAS_B. mean_ptr, var_ptr, w_ptr, b_ptr: [C] tensors."""
        cmask = cols < C
        mean = tl.load(mean_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
        invstd = 1.0 / tl.sqrt(tl.load(var_ptr + cols, mask=cmask, other=1.0).to(tl.float32) + eps)
        w = tl.load(w_ptr + cols, mask=cmask, other=1.0).to(tl.float32) if HAS_W else invstd * 0.0 + 1.0
        b = tl.load(b_ptr + cols, mask=cmask, other=0.0).to(tl.float32) if HAS_B else invstd * 0.0
        return mean, invstd, w, b

    # triton < 3.7 computes the whole chain from x twice when y is stored in two layouts (2 bytes for y,
    # 1 byte for its fp8 copy): there the fp8 copy is made from y read back (just written: from L2)
    _RELOAD_FOR_FP8 = tl.constexpr(triton_version() < (3, 7))

    @triton.jit
    def _apply_kernel(x_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, q_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr,
                      M, C, HW, eps, TILES,
                      BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                      HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, FP8_OUT: tl.constexpr):
        """y = act(x * scale + shift); FP8_OUT: also y's e4m3 copy (delayed scale at st_ptr), the
        scale used (s_ptr) and y's amax for the next call (kernels/fp8.py).

        x_ptr, y_ptr  [M][C] (CHANNELS_LAST) or NCHW, both in the same layout (see _offsets)
        mean_ptr, var_ptr  fp32 [C] batch (or running) statistics; w_ptr, b_ptr: [C] (HAS_W, HAS_B)
        q_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr  FP8_OUT: y's e4m3 copy (y's layout) and the delayed
                 scale's state, scale used, ticket and counts (kernels/fp8.py fp8_rollover)
        M, C, HW, eps  as in _stats_kernel; TILES: row tiles, walked grid-stride by program_id 0"""
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        scale = w * invstd
        shift = b - mean * scale
        if FP8_OUT:
            q_scale = fp8_scale(st_ptr, 448.0)
            inv_q = 1.0 / q_scale
            amax = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        for t in range(tl.program_id(0), TILES, tl.num_programs(0)):  # grid-stride over row tiles
            rows = t * BLOCK_M + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            y = _act_fwd(x * scale[None, :] + shift[None, :], ACT)
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
            if FP8_OUT:
                if _RELOAD_FOR_FP8:
                    tl.debug_barrier()  # the tile's y, written by other threads, is visible to all
                    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # 0 where masked
                    amax = fp8_amax_update(amax, tl.abs(y))
                else:
                    amax = fp8_amax_update(amax, tl.where(mask, tl.abs(y), 0.0))
                tl.store(q_ptr + offs, fp8_cast(y, inv_q, 448.0, False), mask=mask)
        if FP8_OUT:
            if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
                tl.store(s_ptr, q_scale)
            tl.atomic_max(st_ptr + 1, fp8_amax_of(amax))
            fp8_rollover(st_ptr, cnt_ptr, nf_ptr, tl.num_programs(0) * tl.num_programs(1))

    @triton.jit
    def xhat_dz(x, dy, invstd, nshift, w, b, ACT: tl.constexpr):
        """(xhat, dz) of a [rows, BLOCK_C] tile: xhat = x * invstd + nshift (nshift = -mean * invstd),
        dz = dy * act'(w * xhat + b); the per-channel vectors are [BLOCK_C]. Shared with the fused
        conv block's backward (kernels/conv_block.py)."""
        xhat = x * invstd[None, :] + nshift[None, :]
        return xhat, dy * _act_grad(xhat * w[None, :] + b[None, :], ACT)

    @triton.jit
    def _bwd_reduce_kernel(dy_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, ws_ptr, cnt_ptr, sdz_ptr, sdzx_ptr,
                           M, C, HW, ROWS, eps,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                           HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr):
        """The two per-channel sums the training backward needs: sum(dz) and sum(dz * xhat), where
        dz = dy * act'(w * xhat + b) and xhat = (x - mean) / sqrt(var + eps).

        dy_ptr, x_ptr      [M][C] (CHANNELS_LAST) or NCHW, as x of _stats_kernel; the same layout
        mean_ptr, var_ptr  fp32 [C], the forward's batch statistics; w_ptr, b_ptr: [C] (HAS_W, HAS_B)
        ws_ptr   fp32 workspace [2][C]; cnt_ptr: int32 tickets per channel block (both zero between launches)
        sdz_ptr, sdzx_ptr  fp32 [C] outputs: sum(dz), sum(dz * xhat) (the last program of a channel block)
        M, C, HW, ROWS, eps  as in _stats_kernel"""
        pid_m = tl.program_id(0)
        pid_c = tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        nshift = -mean * invstd
        acc1 = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        acc2 = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        start = pid_m * ROWS
        end = tl.minimum(start + ROWS, M)
        for i in range(0, ROWS, BLOCK_M):
            rows = start + i + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, end, C, HW, CHANNELS_LAST)  # this program's rows only
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            xhat, dz = xhat_dz(x, dy, invstd, nshift, w, b, ACT)  # dz = 0 where masked (dy = 0)
            acc1 += dz
            acc2 += dz * xhat
        tl.atomic_add(ws_ptr + cols, tl.sum(acc1, axis=0), mask=cmask)
        tl.atomic_add(ws_ptr + C + cols, tl.sum(acc2, axis=0), mask=cmask)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_c, 1)
        if ticket == tl.num_programs(0) - 1:
            zero = tl.zeros([BLOCK_C], dtype=tl.float32)
            tl.store(sdz_ptr + cols, tl.atomic_add(ws_ptr + cols, zero, mask=cmask), mask=cmask)
            tl.store(sdzx_ptr + cols, tl.atomic_add(ws_ptr + C + cols, zero, mask=cmask), mask=cmask)
            tl.store(ws_ptr + cols, zero, mask=cmask)
            tl.store(ws_ptr + C + cols, zero, mask=cmask)
            tl.store(cnt_ptr + pid_c, 0)

    @triton.jit
    def _bwd_dx_kernel(dy_ptr, x_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sdz_ptr, sdzx_ptr,
                       q_ptr, st_ptr, s_ptr, cnt_ptr, nf_ptr, M, C, HW, eps, TILES,
                       BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, CHANNELS_LAST: tl.constexpr,
                       HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr, TRAINING: tl.constexpr,
                       FP8_OUT: tl.constexpr, E5: tl.constexpr):
        """dx = w / sqrt(var + eps) * (dz - mean(dz) - xhat * mean(dz * xhat)) in training (TRAINING),
        dz * w / sqrt(var + eps) in eval; FP8_OUT: also dx's fp8 copy for the conv=fp8 that produced x.

        dy_ptr, x_ptr, dx_ptr  [M][C] (CHANNELS_LAST) or NCHW, all three in the same layout
        mean_ptr, var_ptr, w_ptr, b_ptr  [C] as in _bwd_reduce_kernel; sdz_ptr, sdzx_ptr: its two sums
        q_ptr    dx's fp8 copy (e5m2 when E5, else e4m3), dx's layout      } FP8_OUT only:
        st_ptr   the delayed scale's fp32 state [2] (previous amax, current) } kernels/fp8.py
        s_ptr    fp32 [1]: the scale used; cnt_ptr: int32 ticket [1]; nf_ptr: fp32 counts [2]
                 (non-finite launches, saturated launches)
        M, C, HW, eps  as in _stats_kernel; TILES: row tiles, walked grid-stride by program_id 0"""
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mean, invstd, w, b = _channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        nshift = -mean * invstd
        wi = w * invstd
        if TRAINING:
            m_dz = tl.load(sdz_ptr + cols, mask=cmask, other=0.0) / M
            m_dzx = tl.load(sdzx_ptr + cols, mask=cmask, other=0.0) / M
        FMAX: tl.constexpr = 57344.0 if E5 else 448.0
        if FP8_OUT:
            q_scale = fp8_scale(st_ptr, FMAX)
            inv_q = 1.0 / q_scale
            amax = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)
        for t in range(tl.program_id(0), TILES, tl.num_programs(0)):
            rows = t * BLOCK_M + tl.arange(0, BLOCK_M)
            offs, mask = _offsets(rows, cols, M, C, HW, CHANNELS_LAST)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            xhat, dz = xhat_dz(x, dy, invstd, nshift, w, b, ACT)
            if TRAINING:
                dz = dz - m_dz[None, :] - xhat * m_dzx[None, :]
            dx = dz * wi[None, :]
            tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            if FP8_OUT:
                tl.store(q_ptr + offs, fp8_cast(dx, inv_q, FMAX, E5), mask=mask)
                amax = fp8_amax_update(amax, tl.where(mask, tl.abs(dx), 0.0))
        if FP8_OUT:
            if (tl.program_id(0) == 0) & (tl.program_id(1) == 0):
                tl.store(s_ptr, q_scale)
            tl.atomic_max(st_ptr + 1, fp8_amax_of(amax))
            fp8_rollover(st_ptr, cnt_ptr, nf_ptr, tl.num_programs(0) * tl.num_programs(1))


# ---------------------------------------------------------------------------------- launchers
# Block configurations (BLOCK_M, BLOCK_C, num_warps, programs per SM): the first whose channel
# block is not wider than the channels (rounded up to a power of two) is used. The grids are sized
# from the SM count in whole waves: programs per SM is the residency the kernel reaches (read off
# the compiled kernel on a GPU; the listed value, checked by `profiling static`, elsewhere).
# profiling static compiles each entry (pinned with ``APPLY_CONFIGS.pinned(entry)``).
RowConfig = namedtuple("RowConfig", "block_m block_c num_warps per_sm")  # per_sm: programs per SM
APPLY_CONFIGS = ConfigList("APPLY_CONFIGS", [RowConfig(64, 64, 4, 4), RowConfig(128, 32, 4, 4),
                                             RowConfig(32, 128, 4, 4), RowConfig(128, 64, 8, 2)])
REDUCE_CONFIGS = ConfigList("REDUCE_CONFIGS", [RowConfig(64, 64, 4, 4), RowConfig(128, 32, 4, 4),
                                               RowConfig(32, 128, 4, 4)])
# The Triton interpreter (CPU) pays per program, not per element: there, launch few tall tiles.
INTERPRETER_PROGRAMS, INTERPRETER_BLOCK_M = 4, 512


def _pick(configs, C: int, M: int | None = None):
    """The first configuration whose channel block is not wider than needed."""
    cpow = triton.next_power_of_2(C)
    cfg = next((c for c in configs if c[1] <= cpow), min(configs, key=lambda c: c[1]))
    if M is not None and interpreting():
        cfg = (max(cfg[0], min(INTERPRETER_BLOCK_M, triton.next_power_of_2(M))),) + cfg[1:]
    return cfg


def _geometry(x: torch.Tensor):
    n, c, h, w = x.shape
    return n * h * w, c, h * w


def _reduce_grid(kernel, M: int, C: int, flags: dict, device):
    """(launch options, rows per program, grid) of a reduction over M: one program per resident slot
    of the GPU (whole waves), split evenly over the channel blocks, each walking an equal chunk of rows."""
    bm, bc, warps, per_sm = _pick(REDUCE_CONFIGS, C, M)
    meta = dict(BLOCK_M=bm, BLOCK_C=bc, num_warps=warps, **flags)
    cblocks = triton.cdiv(C, bc)
    slots = INTERPRETER_PROGRAMS if interpreting() else programs_per_wave(kernel, meta, per_sm, device)
    per_cblock = max(1, min(slots // cblocks, triton.cdiv(M, bm)))
    rows = triton.cdiv(M, per_cblock)  # any count: the kernels mask the rows past their chunk
    return meta, rows, (triton.cdiv(M, rows), cblocks)


def _stream_grid(kernel, M: int, C: int, flags: dict, device, configs=None):
    """(launch options, row tiles, grid) of an elementwise pass: a grid-stride loop over the row tiles
    on a grid of whole waves (fewer programs when there are fewer tiles); ``configs``: the list to
    pick from (APPLY_CONFIGS when None)."""
    bm, bc, warps, per_sm = _pick(APPLY_CONFIGS if configs is None else configs, C, M)
    meta = dict(BLOCK_M=bm, BLOCK_C=bc, num_warps=warps, **flags)
    cblocks = triton.cdiv(C, bc)
    tiles = triton.cdiv(M, bm)
    if interpreting():
        return meta, tiles, (tiles, cblocks)
    slots = programs_per_wave(kernel, meta, per_sm, device)
    return meta, tiles, (max(1, min(tiles, slots // cblocks)), cblocks)


def _launch(kernel, grid, args, meta, device) -> None:
    launch(kernel, grid, args, meta, device)


_WORKSPACES: dict = {}
_RETIRED: list = []  # outgrown workspaces stay alive: a captured CUDA graph may still use them
_ACT_CODE = {"gelu": 0, "silu": 1, "identity": 2}


def _workspace(device: torch.device, C: int, cblocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The scratch of the atomically merged reductions, one per (device, stream) (``stream_key``:
    launches on two streams never share it): 2 x C fp32 sums and a ticket per channel block, all
    zero between calls (the last program of each launch zeroes what it used). Never freed: a
    captured CUDA graph keeps pointing at it."""
    key = stream_key(device)
    ws = _WORKSPACES.get(key)
    if ws is None or ws[0].numel() < 2 * C or ws[1].numel() < cblocks:
        if ws is not None:
            _RETIRED.append(ws)
        ws = (torch.zeros(max(2 * C, 2048), device=device, dtype=torch.float32),
              torch.zeros(max(cblocks, 64), device=device, dtype=torch.int32))
        _WORKSPACES[key] = ws
    return ws


def _opt(t, like: torch.Tensor):
    """``t``, or a placeholder on ``like``'s device for an absent tensor: the kernel never reads it
    (HAS_W / HAS_B are False), but Triton checks that every pointer lives on the launch device."""
    return t if t is not None else like.new_empty(0, dtype=torch.float32)


@torch.library.custom_op("speedrun::bn_stats", mutates_args=("running_mean", "running_var"))
def bn_stats(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
             momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch statistics of x over (N, H, W): (mean, biased var), fp32 [C]; updates the running
    statistics in place (unbiased variance) when they are given. One launch."""
    x, cl = memory_layout(x)
    M, C, HW = _geometry(x)
    update = running_mean is not None and running_var is not None
    meta, rows, grid = _reduce_grid(_stats_kernel, M, C, dict(CHANNELS_LAST=cl, UPDATE_RUNNING=update), x.device)
    ws, cnt = _workspace(x.device, C, grid[1])
    mean = torch.empty(C, device=x.device, dtype=torch.float32)
    var = torch.empty_like(mean)
    _launch(_stats_kernel, grid, (x, ws, cnt, mean, var, running_mean if update else mean,
                                  running_var if update else var, M, C, HW, rows, momentum, M / max(M - 1, 1)),
            meta, x.device)
    return mean, var


@bn_stats.register_fake
def _(x, running_mean, running_var, momentum):
    C = x.shape[1]
    return x.new_empty(C, dtype=torch.float32), x.new_empty(C, dtype=torch.float32)


def _fp8_out(st, like: torch.Tensor, dtype: torch.dtype):
    """(pointer args of a kernel's fp8 copy, the copy, its scale): the copy and its scale tensor when
    the delayed scale ``st`` is ready, else placeholders (FP8_OUT off)."""
    if st is None or not st.ready:
        return (like, like, like, like, like), None, None
    q = torch.empty_strided(like.shape, like.stride(), device=like.device, dtype=dtype)
    sc = torch.empty(1, device=like.device, dtype=torch.float32)
    return (q, st.amax, sc, st.ticket, st.nonfinite), q, sc


@torch.library.custom_op("speedrun::bn_act_apply", mutates_args=())
def bn_act_apply(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor | None,
                 bias: torch.Tensor | None, training: bool, eps: float, activation: str,
                 fp8_owner: torch.Tensor | None = None, fp8_state: int = 0) -> torch.Tensor:
    """y = act((x - mean) / sqrt(var + eps) * weight + bias). ``training``: mean and var are the
    batch statistics of this x, and the backward differentiates through them. ``fp8_state`` (the
    fp8 implementation: the handle of the network's kernels.fp8.Fp8State; 0: none) and
    ``fp8_owner`` (the tensor that identifies the layer: its running mean): also write y's e4m3 copy
    for the conv that reads y, with the layer's delayed scale, into that state."""
    x, cl = memory_layout(x)
    M, C, HW = _geometry(x)
    y = torch.empty_like(x)
    state = fp8.of(fp8_state) if fp8_state and fp8_owner is not None else None
    st = state.scale(fp8_owner, "y") if state is not None else None
    fp8_args, q, sc = _fp8_out(st, y, fp8.E4M3)
    flags = dict(CHANNELS_LAST=cl, HAS_W=weight is not None, HAS_B=bias is not None, ACT=_ACT_CODE[activation],
                 FP8_OUT=q is not None)
    meta, tiles, grid = _stream_grid(_apply_kernel, M, C, flags, x.device)
    _launch(_apply_kernel, grid, (x, y, mean, var, _opt(weight, x), _opt(bias, x), *fp8_args, M, C, HW, eps, tiles),
            meta, x.device)
    if q is not None:
        state.attach(y, q, sc)
    elif st is not None:
        st.init(y)  # the first call measures the amax; the next ones write the copy
    return y


@bn_act_apply.register_fake
def _(x, mean, var, weight, bias, training, eps, activation, fp8_owner=None, fp8_state=0):
    return torch.empty_like(x)


def bwd_sums(dy: torch.Tensor, x: torch.Tensor, cl: bool, mean, var, weight, bias, eps: float, activation: str):
    """(kernel flags, sum(dz), sum(dz * xhat)) of the training backward, dz = dy * act'(w * xhat + b):
    one launch of _bwd_reduce_kernel over x and dy (same layout; ``cl``: channels_last). Shared with
    the fused conv block's backward (kernels/conv_block.py)."""
    M, C, HW = _geometry(x)
    flags = dict(CHANNELS_LAST=cl, HAS_W=weight is not None, HAS_B=bias is not None, ACT=_ACT_CODE[activation])
    meta, rows, grid = _reduce_grid(_bwd_reduce_kernel, M, C, flags, x.device)
    ws, cnt = _workspace(x.device, C, grid[1])
    sdz = torch.empty(C, device=x.device, dtype=torch.float32)
    sdzx = torch.empty_like(sdz)
    _launch(_bwd_reduce_kernel, grid, (dy, x, mean, var, _opt(weight, x), _opt(bias, x), ws, cnt, sdz, sdzx,
                                       M, C, HW, rows, eps), meta, x.device)
    return flags, sdz, sdzx


@torch.library.custom_op("speedrun::bn_act_bwd", mutates_args=())
def bn_act_bwd(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
               weight: torch.Tensor | None, bias: torch.Tensor | None, training: bool, eps: float,
               activation: str, fp8_state: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) of bn_act_apply; dweight/dbias in fp32. ``fp8_state`` (a state's handle,
    0: none): when x came from a conv=fp8 that asked that state for it, also write dx's fp8 copy
    with that conv's gradient scale."""
    x, cl = memory_layout(x)
    dy = dy.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    M, C, HW = _geometry(x)
    flags, sdz, sdzx = bwd_sums(dy, x, cl, mean, var, weight, bias, eps, activation)
    w, b = _opt(weight, x), _opt(bias, x)
    dx = torch.empty_like(x)
    state = fp8.of(fp8_state) if fp8_state else None
    fp8_args, q, sc = _fp8_out(state.grad_wanted(x) if state is not None else None, dx, fp8.GRAD)
    meta, tiles, grid = _stream_grid(_bwd_dx_kernel, M, C, dict(flags, TRAINING=training, FP8_OUT=q is not None,
                                                                E5=fp8.GRAD == fp8.E5M2), x.device)
    _launch(_bwd_dx_kernel, grid, (dy, x, dx, mean, var, w, b, sdz, sdzx, *fp8_args, M, C, HW, eps, tiles), meta,
            x.device)
    if q is not None:
        state.attach(dx, q, sc)
    return dx, sdzx, sdz


@bn_act_bwd.register_fake
def _(dy, x, mean, var, weight, bias, training, eps, activation, fp8_state=0):
    C = x.shape[1]
    return torch.empty_like(x), x.new_empty(C, dtype=torch.float32), x.new_empty(C, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, mean, var, weight, bias, training, eps, activation, fp8_owner, fp8_state = inputs
    ctx.save_for_backward(x, mean, var, weight, bias)
    ctx.training, ctx.eps, ctx.activation = training, eps, activation
    ctx.fp8_state = fp8_state if fp8_owner is not None else 0


def _backward(ctx, dy):
    x, mean, var, weight, bias = ctx.saved_tensors
    dx, dw, db = bn_act_bwd(dy, x, mean, var, weight, bias, ctx.training, ctx.eps, ctx.activation, ctx.fp8_state)
    dw = dw.to(weight.dtype) if weight is not None and ctx.needs_input_grad[3] else None
    db = db.to(bias.dtype) if bias is not None and ctx.needs_input_grad[4] else None
    # mean and var get no gradient: in training the backward above already differentiates through them
    return dx, None, None, dw, db, None, None, None, None, None


bn_act_apply.register_autograd(_backward, setup_context=_setup_context)


@register("bn_act", "triton")
def bn_act_triton(x: torch.Tensor, running_mean, running_var, weight=None, bias=None,
                  training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                  activation: str = "gelu") -> torch.Tensor:
    """Fused Triton kernels: one-pass shifted-sum batch statistics with the running update folded
    in, normalise + affine + activation, and a backward that recomputes the activation from x
    (nothing activation-sized saved); 2 launches forward, 2 backward."""
    return _bn_act(x, running_mean, running_var, weight, bias, training, momentum, eps, activation, None)


@register("bn_act", "fp8")
def bn_act_fp8(x: torch.Tensor, running_mean, running_var, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
               activation: str = "gelu", *, fp8_state: fp8.Fp8State | None = None) -> torch.Tensor:
    """bn_act=triton whose kernels also write the fp8 copies conv=fp8 reads: y in e4m3 (forward) and,
    when x came from a conv=fp8, dx in e5m2 (backward), with delayed scales, in the same passes.
    ``fp8_state``: the network's kernels.fp8.Fp8State that carries the copies to the convs (None:
    no copies, the same as bn_act=triton)."""
    return _bn_act(x, running_mean, running_var, weight, bias, training, momentum, eps, activation, fp8_state)


def _bn_act(x, running_mean, running_var, weight, bias, training, momentum, eps, activation,
            fp8_state: fp8.Fp8State | None):
    check_activation(activation)
    check_tensor("bn_act", "x", x, dim=4)
    C = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        if t is not None:
            check_tensor("bn_act", name, t, dim=1)
            if t.numel() != C:
                raise ValueError(f"bn_act (triton): {name} has {t.numel()} elements, x has {C} channels")
            if t.device != x.device:
                raise RuntimeError(f"bn_act (triton): {name} is on {t.device}, x on {x.device}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("bn_act (triton): eval mode (training=False) needs running_mean and running_var")
    if training and momentum is None:
        raise ValueError("bn_act (triton): momentum=None (cumulative average) is not supported")
    count = x.numel() // C
    if training and count <= 1:
        raise ValueError(f"bn_act: expected more than 1 value per channel when training, got input size "
                         f"{list(x.shape)}")
    if training:
        with torch.no_grad():
            mean, var = bn_stats(x.detach(), running_mean, running_var, momentum)
    else:
        mean, var = running_mean.detach().float().clone(), running_var.detach().float().clone()
    owner, handle = None, fp8.handle_of(fp8_state)
    if handle:  # the layer's identity for its delayed scale: a buffer or parameter that lives with it
        owner = next((t for t in (running_mean, bias, weight) if t is not None), None)
    return bn_act_apply(x, mean, var, weight, bias, training, eps, activation, owner, handle)


# ------------------------------------------------------------------------------------------ spec
class BnActSpec(OpSpec):
    """bn_act's shapes, must-move bytes, sample inputs, configurations and work models (kernels/spec.py).

    Bytes (training, standalone): the batch statistics need one pass over x before y can be
    written, so forward = read x twice + write y (3 passes), backward = read x and dy for the
    gradient sums, then read x and dy and write dx (5 passes); eval forward = 2 passes. The
    parameters and statistics (C floats) are ignored."""
    name = "bn_act"
    tracks_producer = True
    config_lists = (APPLY_CONFIGS, REDUCE_CONFIGS)

    def phase_bytes(self, case, phase, esize=2):
        x = case.numel(case.x_shape)
        return esize * (3 * x if phase == "fwd" else 5 * x)

    def bytes_min(self, case, mode="fwd", esize=2):
        if mode == "fwd" and not case.params.get("training", True):
            return esize * 2 * case.numel(case.x_shape)
        return super().bytes_min(case, mode, esize)

    def sample_call(self, case, device, dtype, *, grad=True, fill="randn", seed=0):
        """As the network calls it (model/net.py BatchNormAct): fp32 running statistics, the weight a
        frozen tensor of ones passed as is, the bias trained; momentum 0.4, eps 1e-12 (airbench's)."""
        t = Sampler(device, dtype, fill, seed)
        C = case.x_shape[1]
        x = t(case.x_shape, requires_grad=grad)
        dy = t(case.x_shape) if grad else None
        rm = torch.zeros(C, device=t.device)
        rv = torch.ones(C, device=t.device)
        w = torch.ones(C, device=t.device)
        b = torch.zeros(C, device=t.device, requires_grad=grad)
        act = case.params.get("activation", "gelu")
        training = case.params.get("training", True)
        return SampleCall((x, rm, rv, w, b, training, 0.4, 1e-12, act), dy,
                          eval_args=(x.detach(), rm, rv, w, b, False, 0.4, 1e-12, act))

    def fp8_ready(self, call, case, phase, state):
        if phase == "fwd":  # the fp8 copy of y has its delayed scale (a step past the first)
            state.scale(call.args[1], "y").ready = True

    def trace(self, x, args, kwargs):
        activation = args[7] if len(args) > 7 else kwargs.get("activation", "gelu")
        return dict(activation=activation), tuple(x.shape), "norm", ""


def _work_reduction(launch, main: float, side: float, per_elem: float, note: str) -> Work:
    """A reduction over the rows of [M, C] in chunks of ROWS per program: ``main`` bytes streamed once,
    ``side`` bytes of per-channel workspace and results; ``note`` may name the programs per channel
    block as {P}."""
    a, cx = launch.args, launch.cx
    M, rows = a["M"], a["ROWS"]
    bm, bc = cx["BLOCK_M"], cx["BLOCK_C"]
    P = grid_of(launch)[0]
    return Work("memory", rows_iters(M, rows, bm, P), bm * bc, main + side, main, per_elem,
                notes=[note.format(P=P)], units=triton.cdiv(M, bm) * grid_of(launch)[1])


def _work_stats(launch, peak, capacity: int) -> Work:
    x, C = launch.args["x_ptr"], launch.args["C"]
    return _work_reduction(launch, x.nbytes, 6 * C * 4, x.esize,
                           "reads x once; {P} programs per channel block merge their sums with atomics, the last "
                           "one finalises (mean, var, running statistics)")


def _work_streaming(launch, passes: int, note: str) -> Work:
    """An elementwise pass over [M, C]: ``passes`` activation-sized tensors moved (the last one
    written), plus the 1-byte fp8 copy when FP8_OUT; a grid-stride loop when TILES is given."""
    a, cx = launch.args, launch.cx
    x, M, C = a["x_ptr"], a["M"], a["C"]
    bm, bc = cx["BLOCK_M"], cx["BLOCK_C"]
    nbytes = passes * M * C * x.esize + (M * C if cx.get("FP8_OUT") else 0)
    iters = stride_iters(launch) if "TILES" in a else 1
    return Work("memory", iters, bm * bc, nbytes, nbytes, passes * x.esize, notes=[note],
                units=a.get("TILES", 1) * grid_of(launch)[1], read_bytes=nbytes * (passes - 1) / passes)


def _work_apply(launch, peak, capacity: int) -> Work:
    return _work_streaming(launch, 2, "reads x, writes y")


def _work_bwd_reduce(launch, peak, capacity: int) -> Work:
    a = launch.args
    x = a["x_ptr"]
    return _work_reduction(launch, 2 * a["M"] * a["C"] * x.esize, 4 * a["C"] * 4, 2 * x.esize,
                           "reads x and dy once; {P} programs per channel block merge with atomics")


def _work_bwd_dx(launch, peak, capacity: int) -> Work:
    return _work_streaming(launch, 3, "reads x and dy, writes dx")


SPEC = register_spec(BnActSpec())
if HAS_TRITON:
    SPEC.work = {_stats_kernel: _work_stats, _apply_kernel: _work_apply, _bwd_reduce_kernel: _work_bwd_reduce,
                 _bwd_dx_kernel: _work_bwd_dx}
