"""Fused conv blocks (issue 23): conv3x3 'same' [-> max-pool 2x2] -> BatchNorm -> activation.

The network's conv groups are two (three for airbench96) such blocks: conv1 -> pool -> BN -> act,
then conv2 -> BN -> act. Unfused, the step moves each activation through HBM several times
between two convs: conv1 writes its full-size output, the pool reads it and writes a quarter,
BatchNorm reads that for its statistics, reads it again to normalise. The fused block keeps the
pool and the statistics in the conv's epilogue.

Implementations of op ``conv_block`` (the signature below; ``pool``: the 2x2 max-pool after the
conv, stride 2, floor mode):
    eager         the composition of today's ops, the reference: conv -> [maxpool] -> bn_act.
                  The network composes its *backend's* conv, maxpool and bn_act for it (the function
                  is marked ``composes``), so every backend that does not name conv_block runs
                  exactly as before; called directly it composes the eager references.
    triton_fused  4 launches forward (eval: 2): conv's implicit GEMM (kernels/conv.py ``_conv_kernel``)
                  with the POOL and STATS epilogues: it writes the pooled tensor and its 1-byte
                  window index (never the full-size output) and per row tile the pooled output's
                  sum and squared deviations from the tile's mean; ``_stats_merge_kernel`` merges the
                  partials (Chan's parallel variance: no cancellation) into the batch mean and
                  variance, ``_running_kernel`` updates the running statistics; bn_act's apply normalises and
                  activates. In training the block is one autograd node (custom op ``conv_block_train``).
                  Backward: bn_act's gradient sums (one launch over the pooled y and the output's
                  gradient), then its dx pass: with the pool ``_bn_dx_pool_kernel`` writes the conv's
                  full-size gradient through the 1-byte index (winner gets it, the other three pixels
                  and an odd size's dropped row / column get zeros), so the pooled gradient is never
                  written nor read back (op ``bn_act_pool_bwd``); without it bn_act's own dx pass. Then
                  conv's input-grad and weight-grad.

Fusions of issue 23 left out for now (the static model's predicted saving per step is in
reports/static/static.md, "Fusions of issue 23"): BatchNorm + activation in the next conv's
prologue (it would be recomputed per tap and per column tile: 9 x 2 activations per element for a
256-channel conv, against one pass that writes it) and the BatchNorm backward's sums in the input-
grad's epilogue.

Eval mode (``training=False``): the conv with the pool epilogue, then bn_act's apply with the
running statistics. fp16, bf16 and fp32 inputs (as conv=triton); stride 1, square odd filters.
"""
from __future__ import annotations

import math

import torch

from . import bn_act as _bn
from . import conv as _conv
from . import maxpool as _pool
from . import _triton
from ._triton import HAS_TRITON, check_tensor, interpreting
from .registry import register
from .spec import ConfigList, OpCase, OpSpec, SampleCall, Sampler, Work, grid_of, programs_of, register_spec, stride_iters

if HAS_TRITON:
    import triton
    import triton.language as tl

    @triton.jit
    def _stats_merge_kernel(part_ptr, ws_ptr, cnt_ptr, mean_ptr, var_ptr, GM, ROWS_T, MQ, C, CHUNK,
                            BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """Batch mean and biased variance per channel from the conv epilogue's per-tile partials.

        part_ptr  fp32 [GM][2][C]: per row tile, the sum of its rows and their squared deviations from
                  the tile's mean; every tile holds ROWS_T rows but the last (MQ rows in all)
        ws_ptr    fp32 [programs of axis 0][2][C]: each program's chunk merged (sum, squared deviations)
        cnt_ptr   int32 tickets, one per channel block (program_id 1), zero between launches
        mean_ptr, var_ptr   fp32 [C] outputs, written by the last program of each channel block
        CHUNK     partial rows per program (program_id 0)

        Chan et al.'s pairwise update in two levels: a program merges its chunk of tiles (the chunk's
        mean first, then every tile's squared deviations plus its count times its mean's squared
        distance to the chunk's), the last one merges the chunks the same way. Every term is a sum of
        squares: no cancellation, whatever the mean."""
        pid_s = tl.program_id(0)
        pid_c = tl.program_id(1)
        cols = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        p0 = pid_s * CHUNK
        p1 = tl.minimum(p0 + CHUNK, GM)
        n_chunk = (tl.minimum(p1 * ROWS_T, MQ) - p0 * ROWS_T).to(tl.float32)
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for i in range(0, CHUNK, BLOCK_P):
            p = p0 + i + tl.arange(0, BLOCK_P)
            m = (p < p1)[:, None] & cmask[None, :]
            acc += tl.load(part_ptr + p[:, None] * (2 * C) + cols[None, :], mask=m, other=0.0)
        s_chunk = tl.sum(acc, axis=0)
        mean_chunk = s_chunk / n_chunk
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for i in range(0, CHUNK, BLOCK_P):
            p = p0 + i + tl.arange(0, BLOCK_P)
            live = p < p1
            m = live[:, None] & cmask[None, :]
            n_p = tl.maximum(tl.minimum(ROWS_T, MQ - p * ROWS_T), 1).to(tl.float32)
            s = tl.load(part_ptr + p[:, None] * (2 * C) + cols[None, :], mask=m, other=0.0)
            q = tl.load(part_ptr + p[:, None] * (2 * C) + C + cols[None, :], mask=m, other=0.0)
            d = s / n_p[:, None] - mean_chunk[None, :]
            acc += tl.where(m, q + n_p[:, None] * d * d, 0.0)
        tl.store(ws_ptr + pid_s * (2 * C) + cols, s_chunk, mask=cmask)
        tl.store(ws_ptr + pid_s * (2 * C) + C + cols, tl.sum(acc, axis=0), mask=cmask)
        tl.debug_barrier()
        ticket = tl.atomic_add(cnt_ptr + pid_c, 1)
        if ticket == tl.num_programs(0) - 1:  # the last program of this channel block merges the chunks
            S = tl.num_programs(0)
            safe_cols = tl.minimum(cols, C - 1)  # every lane reads a real address (a masked atomic's result is undefined)
            tot = tl.zeros([BLOCK_C], dtype=tl.float32)
            for i in range(0, S, BLOCK_P):
                c = i + tl.arange(0, BLOCK_P)
                m = (c < S)[:, None] & cmask[None, :]
                zero = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
                # read at L2, where the other programs' stores landed before their tickets
                at = tl.minimum(c, S - 1)[:, None] * (2 * C) + safe_cols[None, :]
                tot += tl.sum(tl.where(m, tl.atomic_add(ws_ptr + at, zero), 0.0), axis=0)
            mean = tot / MQ
            m2 = tl.zeros([BLOCK_C], dtype=tl.float32)
            for i in range(0, S, BLOCK_P):
                c = i + tl.arange(0, BLOCK_P)
                live = c < S
                m = live[:, None] & cmask[None, :]
                zero = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
                n_c = tl.maximum(tl.minimum(tl.minimum((c + 1) * CHUNK, GM) * ROWS_T, MQ) - c * CHUNK * ROWS_T, 1)
                n_c = n_c.to(tl.float32)
                at = tl.minimum(c, S - 1)[:, None] * (2 * C) + safe_cols[None, :]
                s = tl.where(m, tl.atomic_add(ws_ptr + at, zero), 0.0)
                q = tl.where(m, tl.atomic_add(ws_ptr + C + at, zero), 0.0)
                d = s / n_c[:, None] - mean[None, :]
                m2 += tl.sum(tl.where(m, q + n_c[:, None] * d * d, 0.0), axis=0)
            tl.store(mean_ptr + cols, mean, mask=cmask)
            tl.store(var_ptr + cols, m2 / MQ, mask=cmask)
            tl.store(cnt_ptr + pid_c, 0)

    @triton.jit
    def _running_kernel(rm_ptr, rv_ptr, mean_ptr, var_ptr, C, momentum, unbias, BLOCK_C: tl.constexpr):
        """r = (1 - momentum) r + momentum * stat, the variance unbiased (x unbias): BatchNorm's
        running statistics, in their own dtype.

        rm_ptr, rv_ptr      running mean and variance [C] (any float dtype), updated in place
        mean_ptr, var_ptr   fp32 [C]: the batch's mean and biased variance"""
        cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
        m = cols < C
        rm = tl.load(rm_ptr + cols, mask=m, other=0.0).to(tl.float32)
        rv = tl.load(rv_ptr + cols, mask=m, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + cols, mask=m, other=0.0)
        var = tl.load(var_ptr + cols, mask=m, other=0.0)
        tl.store(rm_ptr + cols, ((1 - momentum) * rm + momentum * mean).to(rm_ptr.dtype.element_ty), mask=m)
        tl.store(rv_ptr + cols, ((1 - momentum) * rv + momentum * var * unbias).to(rv_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _bn_dx_pool_kernel(dy_ptr, x_ptr, idx_ptr, dx_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sdz_ptr, sdzx_ptr,
                           M, C, OH, OW, PH, PW, HE, WE, PE, eps, TILES,
                           BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                           ACT: tl.constexpr, IDX64: tl.constexpr):
        """The BatchNorm + activation backward's dx pass (training) scattered through the 2x2 max-pool's
        index: the gradient of the conv's full-size output, written once, never the pooled gradient.

        dy_ptr   the block output's gradient, pooled [N][PH][PW][C] channels_last (contiguous)
        x_ptr    the pooled conv output the BatchNorm normalised, dy's layout; idx_ptr: its uint8 window
                 index (the pool's winner in scan order), dy's layout
        dx_ptr   the conv output's gradient, full-size [N][OH][OW][C] channels_last (contiguous)
        mean_ptr, var_ptr, w_ptr, b_ptr, sdz_ptr, sdzx_ptr  as in bn_act's _bwd_dx_kernel
        M        pooled pixels N * PH * PW (the BatchNorm's count); C: channels
        HE, WE   the ceil-mode window grid, cdiv(OH, 2) x cdiv(OW, 2): its last row / column (odd OH /
                 OW) covers the row / column the floor-mode pool dropped, whose gradient is zero
        PE       windows of that grid, N * HE * WE; TILES: tiles of BLOCK_M windows, walked grid-stride
        IDX64    64-bit offsets (a full-size gradient of 2^31 elements or more)

        dx = w / sqrt(var + eps) * (dz - mean(dz) - xhat * mean(dz * xhat)) at the window's winner,
        zero at its other three pixels: every element of the full-size gradient is written once."""
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cmask = cols < C
        mean, invstd, w, b = _bn._channel_affine(cols, C, mean_ptr, var_ptr, w_ptr, b_ptr, eps, HAS_W, HAS_B)
        nshift = -mean * invstd
        wi = w * invstd
        m_dz = tl.load(sdz_ptr + cols, mask=cmask, other=0.0) / M
        m_dzx = tl.load(sdzx_ptr + cols, mask=cmask, other=0.0) / M
        for t in range(tl.program_id(0), TILES, tl.num_programs(0)):
            p = t * BLOCK_M + tl.arange(0, BLOCK_M)
            live = p < PE
            n, he, we = _conv._pixels(p, HE, WE)  # image, window row and column
            if IDX64:
                n = n.to(tl.int64)
            pooled = (live & (he < PH) & (we < PW))[:, None] & cmask[None, :]
            poff = (((n * PH + he) * PW + we) * C)[:, None] + cols[None, :]
            x = tl.load(x_ptr + poff, mask=pooled, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + poff, mask=pooled, other=0.0).to(tl.float32)
            arg = tl.load(idx_ptr + poff, mask=pooled, other=0).to(tl.int32)
            xhat, dz = _bn.xhat_dz(x, dy, invstd, nshift, w, b, ACT)
            g = ((dz - m_dz[None, :] - xhat * m_dzx[None, :]) * wi[None, :]).to(dx_ptr.dtype.element_ty)
            zero = tl.zeros([BLOCK_M, BLOCK_C], dtype=dx_ptr.dtype.element_ty)
            fbase = ((n * OH + 2 * he) * OW + 2 * we) * C  # the window's top-left pixel, once per row
            for k in tl.static_range(4):
                inb = (live & (2 * he + k // 2 < OH) & (2 * we + k % 2 < OW))[:, None] & cmask[None, :]
                off = (fbase + ((k // 2) * OW + k % 2) * C)[:, None] + cols[None, :]
                tl.store(dx_ptr + off, tl.where(pooled & (arg == k), g, zero), mask=inb)


MERGE_BLOCK_P, MERGE_MIN_CHUNK, MERGE_MAX_PROGRAMS = 16, 16, 64
# _bn_dx_pool_kernel's tiles (bn_act's RowConfig: BLOCK_M windows x BLOCK_C channels, warps, programs per SM),
# the first whose channel block is not wider than the channels: each window stores four pixels, so
# its tiles are half bn_act's apply tiles (at 64 x 64 the sm_90 build holds 234 registers, 2 programs per SM)
DX_POOL_CONFIGS = ConfigList("DX_POOL_CONFIGS", [_bn.RowConfig(32, 64, 4, 4), _bn.RowConfig(64, 32, 4, 4),
                                                 _bn.RowConfig(16, 128, 4, 4)])


def _merge(part: torch.Tensor, rows: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, var) fp32 [C] from the epilogue's partials ``part`` [GM][2][C] (``rows`` rows per tile,
    ``count`` rows in all): one launch of _stats_merge_kernel."""
    GM, _, C = part.shape
    block_c = min(64, max(16, triton.next_power_of_2(C)))
    cblocks = triton.cdiv(C, block_c)
    programs = 1 if interpreting() else max(1, min(MERGE_MAX_PROGRAMS, triton.cdiv(GM, MERGE_MIN_CHUNK)))
    chunk = triton.cdiv(GM, programs)
    programs = triton.cdiv(GM, chunk)  # no empty chunk
    ws = torch.empty((programs, 2, C), device=part.device, dtype=torch.float32)
    _, cnt = _bn._workspace(part.device, C, cblocks)
    mean = torch.empty(C, device=part.device, dtype=torch.float32)
    var = torch.empty_like(mean)
    _triton.launch(_stats_merge_kernel, (programs, cblocks), (part, ws, cnt, mean, var, GM, rows, count, C, chunk),
                   dict(BLOCK_P=MERGE_BLOCK_P, BLOCK_C=block_c, num_warps=4), part.device)
    return mean, var


def _cl_strides(shape) -> list[int]:
    n, c, h, w = shape
    return [h * w * c, 1, w * c, c]


def _outputs(x: torch.Tensor, w: torch.Tensor, padding: int, pool: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, idx) as conv2d_fwd_fused returns them, unwritten (the op and its fake implementation)."""
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    OH, OW = H + 2 * padding - KH + 1, W + 2 * padding - KW + 1
    y = _conv._out_nhwc((N, CO, OH // 2, OW // 2) if pool else (N, CO, OH, OW), x)
    idx = (torch.empty_strided(y.shape, y.stride(), device=x.device, dtype=torch.uint8) if pool
           else x.new_empty(0, dtype=torch.uint8))
    return y, idx


@torch.library.custom_op("speedrun::conv2d_fwd_fused", mutates_args=())
def conv2d_fwd_fused(x: torch.Tensor, w: torch.Tensor, padding: int, pool: bool, stats: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, idx, mean, var): the conv (stride 1, no bias), 2x2 max-pooled when ``pool`` (idx: the
    uint8 window index, with y's strides; else empty), and with ``stats`` the batch mean and biased
    variance of y per channel (fp32 [C]; else empty), from the conv's epilogue. y channels_last."""
    N, CI, H, W = x.shape
    CO, _, KH, KW = w.shape
    y, idx = _outputs(x, w, padding, pool)
    fused = dict(pool=pool, stats=stats, idx=idx)
    _conv._launch_conv(_conv._gemm_input(x), _conv._weight_cl(w), None, y, H, W, H + 2 * padding - KH + 1,
                       W + 2 * padding - KW + 1, CI, CO, KH, KW, padding, False, 0, "fwd", fused=fused)
    if not stats:
        empty = x.new_empty(0, dtype=torch.float32)
        return y, idx, empty, empty.clone()
    mean, var = _merge(fused["part"], fused["rows"], N * y.shape[2] * y.shape[3])
    return y, idx, mean, var


@conv2d_fwd_fused.register_fake
def _(x, w, padding, pool, stats):
    y, idx = _outputs(x, w, padding, pool)
    n = w.shape[0] if stats else 0
    return y, idx, x.new_empty(n, dtype=torch.float32), x.new_empty(n, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, w, padding, pool, stats = inputs
    _, idx, mean, var = output
    ctx.save_for_backward(x, w, idx)
    ctx.padding, ctx.pool = padding, pool
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    ctx.conv_shape = [N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1]
    ctx.mark_non_differentiable(idx, mean, var)
    ctx.set_materialize_grads(False)


def _backward(ctx, dy, _didx, _dmean, _dvar):
    x, w, idx = ctx.saved_tensors
    if dy is None:
        return None, None, None, None, None
    if ctx.pool:  # the pool's backward through the 1-byte index: the full-size gradient
        dy = _pool.maxpool_bwd_index(dy, idx, ctx.conv_shape, _cl_strides(ctx.conv_shape), 2)
    dx = _conv.conv2d_dgrad(dy, w, list(x.shape), ctx.padding) if ctx.needs_input_grad[0] else None
    dw = _conv.conv2d_wgrad(dy, x, list(w.shape), ctx.padding) if ctx.needs_input_grad[1] else None
    return dx, dw, None, None, None


conv2d_fwd_fused.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("speedrun::bn_act_pool_bwd", mutates_args=())
def bn_act_pool_bwd(dy: torch.Tensor, x: torch.Tensor, idx: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                    weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float, activation: str,
                    full_shape: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d full, dweight, dbias) of pool -> bn_act (training) from the block output's gradient ``dy``:
    bn_act's gradient sums over the pooled ``x`` (one launch), then ``_bn_dx_pool_kernel``, which writes
    the gradient of the full-size conv output [``full_shape``] (channels_last) through the pool's
    index: the pooled gradient is never written. dweight, dbias fp32."""
    # the kernel indexes all three as dense channels_last (the block's own y and idx already are: no copy)
    dy, x, idx = (t.contiguous(memory_format=torch.channels_last) for t in (dy, x, idx))
    _, sdz, sdzx = _bn.bwd_sums(dy, x, True, mean, var, weight, bias, eps, activation)
    N, C, PH, PW = x.shape
    OH, OW = full_shape[2], full_shape[3]
    dfull = torch.empty_strided(tuple(full_shape), _cl_strides(full_shape), device=x.device, dtype=x.dtype)
    HE, WE = triton.cdiv(OH, 2), triton.cdiv(OW, 2)
    PE = N * HE * WE
    flags = dict(HAS_W=weight is not None, HAS_B=bias is not None, ACT=_bn._ACT_CODE[activation],
                 IDX64=dfull.numel() >= 2 ** 31)
    meta, tiles, grid = _bn._stream_grid(_bn_dx_pool_kernel, PE, C, flags, x.device, DX_POOL_CONFIGS)
    _triton.launch(_bn_dx_pool_kernel, grid, (dy, x, idx, dfull, mean, var, _bn._opt(weight, x), _bn._opt(bias, x),
                                              sdz, sdzx, N * PH * PW, C, OH, OW, PH, PW, HE, WE, PE, eps, tiles),
                   meta, x.device)
    return dfull, sdzx, sdz


@bn_act_pool_bwd.register_fake
def _(dy, x, idx, mean, var, weight, bias, eps, activation, full_shape):
    C = x.shape[1]
    return (torch.empty_strided(tuple(full_shape), _cl_strides(full_shape), device=x.device, dtype=x.dtype),
            x.new_empty(C, dtype=torch.float32), x.new_empty(C, dtype=torch.float32))


@torch.library.custom_op("speedrun::conv_block_train", mutates_args=())
def conv_block_train(x: torch.Tensor, w: torch.Tensor, bn_weight: torch.Tensor | None, bn_bias: torch.Tensor | None,
                     padding: int, pool: bool, eps: float, activation: str
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, y, idx, mean, var): the training block forward as one autograd node, so that its
    backward can go from the output's gradient to the conv's without the pooled gradient in between.
    y: the (pooled) conv output, idx its window index (empty without ``pool``), mean / var its batch
    statistics (fp32 [C]), out = act(BatchNorm(y)) in y's dtype and layout."""
    y, idx, mean, var = conv2d_fwd_fused(x, w, padding, pool, True)
    return _bn.bn_act_apply(y, mean, var, bn_weight, bn_bias, True, eps, activation), y, idx, mean, var


@conv_block_train.register_fake
def _(x, w, bn_weight, bn_bias, padding, pool, eps, activation):
    y, idx = _outputs(x, w, padding, pool)
    C = w.shape[0]
    return torch.empty_like(y), torch.empty_like(y), idx, x.new_empty(C, dtype=torch.float32), \
        x.new_empty(C, dtype=torch.float32)


def _setup_train(ctx, inputs, output):
    x, w, bn_weight, bn_bias, padding, pool, eps, activation = inputs
    _, y, idx, mean, var = output
    ctx.save_for_backward(x, w, bn_weight, bn_bias, y, idx, mean, var)
    ctx.padding, ctx.pool, ctx.eps, ctx.activation = padding, pool, eps, activation
    N, _, H, W = x.shape
    CO, _, KH, KW = w.shape
    ctx.conv_shape = [N, CO, H + 2 * padding - KH + 1, W + 2 * padding - KW + 1]
    ctx.mark_non_differentiable(y, idx, mean, var)
    ctx.set_materialize_grads(False)


def _backward_train(ctx, dout, _dy, _didx, _dmean, _dvar):
    x, w, bn_weight, bn_bias, y, idx, mean, var = ctx.saved_tensors
    if dout is None:
        return (None,) * 8
    if ctx.pool:  # BatchNorm's dx pass scatters through the index: the full-size gradient directly
        dy, dbw, dbb = bn_act_pool_bwd(dout, y, idx, mean, var, bn_weight, bn_bias, ctx.eps, ctx.activation,
                                       ctx.conv_shape)
    else:
        dy, dbw, dbb = _bn.bn_act_bwd(dout, y, mean, var, bn_weight, bn_bias, True, ctx.eps, ctx.activation)
    dx = _conv.conv2d_dgrad(dy, w, list(x.shape), ctx.padding) if ctx.needs_input_grad[0] else None
    dw = _conv.conv2d_wgrad(dy, x, list(w.shape), ctx.padding) if ctx.needs_input_grad[1] else None
    dbw = dbw.to(bn_weight.dtype) if bn_weight is not None and ctx.needs_input_grad[2] else None
    dbb = dbb.to(bn_bias.dtype) if bn_bias is not None and ctx.needs_input_grad[3] else None
    return dx, dw, dbw, dbb, None, None, None, None


conv_block_train.register_autograd(_backward_train, setup_context=_setup_train)


@torch.library.custom_op("speedrun::bn_running_update", mutates_args=("running_mean", "running_var"))
def bn_running_update(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                      momentum: float, unbias: float) -> None:
    """BatchNorm's running statistics updated in place from a batch's mean and biased variance."""
    C = running_mean.numel()
    block = min(1024, triton.next_power_of_2(C))
    _triton.launch(_running_kernel, (triton.cdiv(C, block),), (running_mean, running_var, mean, var, C, momentum, unbias),
                   dict(BLOCK_C=block, num_warps=4), running_mean.device)


@bn_running_update.register_fake
def _(running_mean, running_var, mean, var, momentum, unbias):
    return None


# ------------------------------------------------------------------------------ implementations
@register("conv_block", "eager")
def conv_block_eager(x: torch.Tensor, weight: torch.Tensor, running_mean, running_var, bn_weight=None, bn_bias=None,
                     training: bool = False, momentum: float = 0.1, eps: float = 1e-5, activation: str = "gelu",
                     pool: bool = False) -> torch.Tensor:
    """The composition of today's ops, unfused: conv -> [max-pool 2] -> bn_act (the network composes
    its backend's implementations of them; called directly: the eager references)."""
    y = _conv.conv_eager(x, weight, None, weight.shape[-1] // 2)
    if pool:
        y = _pool.maxpool_eager(y, 2, 2)
    return _bn.bn_act_eager(y, running_mean, running_var, bn_weight, bn_bias, training, momentum, eps, activation)


conv_block_eager.composes = True  # model/net.py: compose the backend's conv, maxpool and bn_act instead


@register("conv_block", "triton_fused")
def conv_block_fused(x: torch.Tensor, weight: torch.Tensor, running_mean, running_var, bn_weight=None, bn_bias=None,
                     training: bool = False, momentum: float = 0.1, eps: float = 1e-5, activation: str = "gelu",
                     pool: bool = False) -> torch.Tensor:
    """The max-pool and the BatchNorm statistics in the Triton conv's epilogue (the full-size conv
    output is never written; no statistics pass), then bn_act's apply; backward through bn_act's,
    the pool's scatter in BatchNorm's dx pass (1-byte index) and the conv's Triton kernels. 4 launches forward (two
    of them C-sized), 5 backward (bn sums, dx, input-grad, weight-grad and its sum)."""
    _bn.check_activation(activation)
    check_tensor("conv_block", "x", x, dim=4)
    check_tensor("conv_block", "weight", weight, dim=4)
    k = weight.shape[-1]
    if weight.shape[-2] != k or k % 2 == 0:
        raise ValueError(f"conv_block (triton_fused): the filter must be square with an odd size ('same' padding), "
                         f"got {list(weight.shape[-2:])}")
    pad = _conv._check(x, weight, None, k // 2)
    C = weight.shape[0]
    for name, t in (("running_mean", running_mean), ("running_var", running_var),
                    ("bn_weight", bn_weight), ("bn_bias", bn_bias)):
        if t is not None and (t.dim() != 1 or t.numel() != C):
            raise ValueError(f"conv_block (triton_fused): {name} must have {C} elements (the conv's output "
                             f"channels), got shape {list(t.shape)}")
    if pool and (x.shape[2] < 2 or x.shape[3] < 2):
        raise ValueError(f"conv_block (triton_fused): a 2x2 max-pool needs at least 2x2 pixels, got {list(x.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("conv_block (triton_fused): eval mode (training=False) needs running_mean and running_var")
    if training and momentum is None:
        raise ValueError("conv_block (triton_fused): momentum=None (cumulative average) is not supported")
    if not training:
        y, _, _, _ = conv2d_fwd_fused(x, weight, pad, pool, False)
        mean, var = running_mean.detach().float().clone(), running_var.detach().float().clone()
        return _bn.bn_act_apply(y, mean, var, bn_weight, bn_bias, False, eps, activation)
    N, _, H, W = x.shape
    count = N * ((H // 2) * (W // 2) if pool else H * W)
    if count <= 1:
        raise ValueError(f"conv_block: expected more than 1 value per channel when training, got {count} "
                         f"(input {list(x.shape)}, pool={pool})")
    out, _, _, mean, var = conv_block_train(x, weight, bn_weight, bn_bias, pad, pool, eps, activation)
    if running_mean is not None and running_var is not None:
        with torch.no_grad():
            bn_running_update(running_mean, running_var, mean, var, momentum, count / (count - 1))
    return out


# ------------------------------------------------------------------------------------------ spec
class ConvBlockSpec(OpSpec):
    """conv_block's shapes, must-move bytes and FLOPs, sample inputs and work models (kernels/spec.py).

    FLOPs: the conv's three GEMMs (the pool and BatchNorm are memory work). Bytes, the fused design's
    must-move (each tensor once per kernel that needs it): forward x, w, the pooled y and its index
    (or y) written, y read and the activation written; backward the activation's gradient and y read,
    y's gradient written (BatchNorm; with the pool, the index read and the full-size gradient written
    instead), the input-grad (it and w read, dx written) and weight-grad (x and it read)."""
    name = "conv_block"
    optional_input_grad = True
    # its own configurations: the pooled forward's and the pooled dx pass's (the rest are conv's lists, which profiling static
    # already compiles entry by entry for the conv op at the same shapes)
    config_lists = (_conv.FUSED_CONFIGS, DX_POOL_CONFIGS)

    def forget_choices(self):
        _conv.forget_choices()

    def out_shape(self, case):
        n, _, h, w = case.x_shape
        cout = case.params["cout"]
        return (n, cout, h // 2, w // 2) if case.params.get("pool") else (n, cout, h, w)

    def flops(self, case, mode="fwd"):
        n, cin, h, w = case.x_shape
        gemm = 2.0 * n * h * w * case.params["cout"] * cin * case.params["k"] ** 2
        return gemm if mode == "fwd" else gemm * (2 + case.params.get("input_grad", True))

    def phase_bytes(self, case, phase, esize=2):
        n, cin, h, wd = case.x_shape
        cout, k = case.params["cout"], case.params["k"]
        x, w, full = n * cin * h * wd, cout * cin * k * k, n * cout * h * wd
        y = case.numel(self.out_shape(case))
        idx = y if case.params.get("pool") else 0
        if phase == "fwd":
            return esize * (x + w + y + y + y) + idx
        # BatchNorm's backward reads the output's gradient and y, then writes y's gradient: with the pool,
        # its dx pass writes the full-size gradient through the index instead (the pooled one never exists)
        bn_bwd = esize * (2 * y + full) + idx if case.params.get("pool") else esize * 3 * y
        dgrad = esize * (full + w + x) if case.params.get("input_grad", True) else 0
        return bn_bwd + dgrad + esize * (x + full + w)

    def sample_call(self, case, device, dtype, *, grad=True, fill="randn", seed=0):
        """As the network calls it (model/net.py ConvGroup): fp32 BatchNorm state, the weight frozen
        at ones, the bias trained; momentum 0.4, eps 1e-12 (airbench's)."""
        t = Sampler(device, dtype, fill, seed)
        p = case.params
        cin, cout, k = case.x_shape[1], p["cout"], p["k"]
        x = t(case.x_shape, requires_grad=grad and p.get("input_grad", True))
        w = t((cout, cin, k, k), scale=0.1, requires_grad=grad)
        rm = torch.zeros(cout, device=t.device)
        rv = torch.ones(cout, device=t.device)
        bw = torch.ones(cout, device=t.device)
        bb = torch.zeros(cout, device=t.device, requires_grad=grad)
        dy = t(self.out_shape(case)) if grad else None
        act, pool = p.get("activation", "gelu"), p.get("pool", False)
        return SampleCall((x, w, rm, rv, bw, bb, True, 0.4, 1e-12, act, pool), dy,
                          eval_args=(x.detach(), w.detach(), rm, rv, bw, bb, False, 0.4, 1e-12, act, pool))

    def trace(self, x, args, kwargs):
        names = ("weight", "running_mean", "running_var", "bn_weight", "bn_bias", "training", "momentum", "eps",
                 "activation", "pool")
        a = dict(zip(names, args), **kwargs)
        w, pool = a["weight"], a.get("pool", False)
        act = a.get("activation", "gelu")
        params = dict(cout=w.shape[0], k=w.shape[-1], padding=w.shape[-1] // 2, pool=pool, activation=act)
        n, _, h, wd = x.shape
        out = (n, w.shape[0], h // 2, wd // 2) if pool else (n, w.shape[0], h, wd)
        suffix = ".block1" if pool else (".block3" if act == "identity" else ".block2")
        return params, out, "block", suffix

    def produces(self, case):
        return 0

    def fuse_cases(self, cases):
        """conv -> maxpool 2 -> bn_act and conv -> bn_act (a 3x3 'same' conv without bias; the pool
        not the network's final one) become one block each, named after the conv (group1.conv1 ->
        group1.block1), with the same params as ``trace`` gives a block the network calls."""
        out, i = [], 0
        while i < len(cases):
            c = cases[i]
            nxt = cases[i + 1] if i + 1 < len(cases) else None
            after = cases[i + 2] if i + 2 < len(cases) else None
            same = (c.op == "conv" and c.params.get("k", 0) % 2 == 1 and c.params.get("padding") == c.params["k"] // 2
                    and not c.params.get("bias"))
            pool = (same and nxt is not None and nxt.op == "maxpool" and nxt.params.get("k") == 2
                    and after is not None and after.op == "bn_act")
            if same and (pool or (nxt is not None and nxt.op == "bn_act")):
                norm = after if pool else nxt
                params = dict(cout=c.params["cout"], k=c.params["k"], padding=c.params["padding"], pool=pool,
                              activation=norm.params.get("activation", "gelu"))
                if c.params.get("input_grad") is False:
                    params["input_grad"] = False
                head, _, last = c.name.rpartition(".")
                name = (head + "." if head else "") + last.replace("conv", "block")
                out.append(OpCase("conv_block", name, c.x_shape, params))
                i += 3 if pool else 2
            else:
                out.append(c)
                i += 1
        return out


def _work_merge(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    GM, C = a["GM"], a["C"]
    part = GM * 2 * C * 4
    nbytes = 2 * part + grid_of(launch)[0] * 2 * C * 4 * 2 + 2 * C * 4
    return Work("memory", 2 * math.ceil(a["CHUNK"] / cx["BLOCK_P"]), cx["BLOCK_P"] * cx["BLOCK_C"], nbytes, part, 8,
                notes=[f"{GM} tiles' partials read twice (sums, then deviations) by {grid_of(launch)[0]} programs per "
                       "channel block; the last merges their chunks"], units=programs_of(launch), read_bytes=2 * part)


def _work_running(launch, peak, capacity: int) -> Work:
    C = launch.args["C"]
    nbytes = 6 * C * 4
    return Work("memory", 1, launch.cx["BLOCK_C"], nbytes, nbytes, 24, notes=["running statistics, C floats"],
                units=programs_of(launch))


def _work_dx_pool(launch, peak, capacity: int) -> Work:
    a, cx = launch.args, launch.cx
    x, dx, C = a["x_ptr"], a["dx_ptr"], a["C"]
    es = x.esize
    pooled = a["M"] * C
    read = 2 * x.nbytes + pooled  # x and dy (pooled), the 1-byte index
    nbytes = read + dx.nbytes
    return Work("memory", stride_iters(launch), cx["BLOCK_M"] * cx["BLOCK_C"], nbytes, nbytes, 2 * es + 1 + 4 * es,
                notes=["reads the pooled x, dy and window index, writes the full-size gradient (elements = windows "
                       "of the ceil-mode grid)"], units=a["TILES"] * grid_of(launch)[1], read_bytes=read)


SPEC = register_spec(ConvBlockSpec())
if HAS_TRITON:
    SPEC.work = {_stats_merge_kernel: _work_merge, _running_kernel: _work_running, _bn_dx_pool_kernel: _work_dx_pool}
